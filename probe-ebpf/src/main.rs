//! tailprobe's kernel programs.
//!
//! One module per hook under `probes/`; shared maps and helpers in `maps.rs`
//! and `task.rs`. No kernel struct layout is compiled in: the few
//! `task_struct` offsets the programs need are globals that the loader fills
//! from the running kernel's BTF before loading.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod maps;
mod per_target;
mod probes;
mod task;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
