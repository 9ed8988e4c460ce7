//! `tailprobe restore`: put back every change a crashed or holding run left.

use anyhow::Result;
use clap::Args;

use super::node_common::{self as nc, NodeArgs};
use crate::node::{
    exit,
    journal::{self, Found},
};

/// Restore every knob recorded in the change journal (governor, thread and
/// IRQ affinity, sysctls), as a crashed, killed or holding run left them.
///
/// A journal from another boot is shown and not applied (exit code 5): the
/// reboot reset those knobs already; `--discard` removes it. Exit code 6
/// when some knob could not be put back (the journal keeps it, out of the
/// way of later commands, until a `restore` succeeds or `--discard` drops
/// it).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Remove a journal from another boot after showing it; drop changes
    /// that still cannot be put back (after one more try) from the journal.
    #[arg(long)]
    pub discard: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn main(args: &RestoreArgs) -> Result<i32> {
    let path = args.node.journal_path();
    let (found, _lock) = journal::inspect(&path, std::path::Path::new("/proc"))?;
    match found {
        Found::Nothing => {
            eprintln!(
                "tailprobe: nothing to restore ({} does not exist)",
                path.display()
            );
            Ok(super::exit::OK)
        }
        Found::Stale(d) => {
            eprintln!(
                "tailprobe: {} was written in another boot (boot id {}, pid {}); its changes \
                 were reset by the reboot and are NOT applied:",
                path.display(),
                d.boot_id,
                d.owner_pid
            );
            for e in &d.entries {
                eprintln!("tailprobe:   {} was {:?}", e.knob.describe(), e.original);
            }
            if args.discard {
                std::fs::remove_file(&path)?;
                eprintln!("tailprobe: removed {}", path.display());
                return Ok(super::exit::OK);
            }
            eprintln!("tailprobe: remove it with `tailprobe restore --discard`");
            Ok(exit::STALE_JOURNAL)
        }
        Found::Crashed(d) | Found::Held(d) => {
            let rep = journal::restore_all(&path, std::path::Path::new("/proc"), &d, args.discard)?;
            let code = nc::report_restore(&rep);
            if rep.is_complete() {
                return Ok(code);
            }
            if args.discard {
                eprintln!(
                    "tailprobe: discarded {} change(s) that cannot be put back from {}",
                    rep.failed.len(),
                    path.display()
                );
                return Ok(super::exit::OK);
            }
            eprintln!(
                "tailprobe: the journal keeps them; fix the cause and run `tailprobe restore` \
                 again, or drop them with `tailprobe restore --discard`"
            );
            Ok(code)
        }
    }
}
