//! One module per kernel hook.
mod sched_migrate;
mod sched_switch;
mod sched_wakeup;
