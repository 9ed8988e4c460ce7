//! One module per kernel hook (or family of hooks).
mod cpu_idle;
mod irq;
mod mm_migrate_pages;
mod numa;
mod page_fault;
mod process;
mod sched_migrate;
mod sched_switch;
mod sched_wakeup;
mod wake_edges;
