//! PCI devices of interest: accelerators (by vendor and class) and NICs,
//! with their NUMA node, local CPUs and (for NICs) MSI IRQs.

use std::{fs, path::Path};

use super::{Nic, PciDevice};
use crate::{fsx, irq, Roots};

pub(super) fn vendor_name(v: &str) -> Option<String> {
    match v {
        "0x10de" => Some("NVIDIA".into()),
        "0x1002" => Some("AMD".into()),
        "0x8086" => Some("Intel".into()),
        "0x15b3" => Some("Mellanox/NVIDIA".into()),
        "0x14e4" => Some("Broadcom".into()),
        "0x1af4" => Some("virtio".into()),
        _ => None,
    }
}

/// Accelerators: NVIDIA or AMD display/3D (class 0x03) or processing
/// accelerator (class 0x12) functions. NVSwitches and audio functions of a
/// GPU are left out.
pub fn is_accelerator(vendor: &str, class: &str) -> bool {
    let Ok(c) = u32::from_str_radix(class.trim_start_matches("0x"), 16) else {
        return false;
    };
    matches!(vendor, "0x10de" | "0x1002") && matches!(c >> 16, 0x03 | 0x12)
}

pub(super) fn numa_node_of(dev: &Path) -> Option<u32> {
    let n: i64 = fsx::read_opt(&dev.join("numa_node"))?.parse().ok()?;
    u32::try_from(n).ok()
}

pub(super) fn pci_device(dir: &Path, bdf: &str) -> Option<PciDevice> {
    let vendor = fsx::read_opt(&dir.join("vendor"))?;
    Some(PciDevice {
        bdf: bdf.to_string(),
        vendor_name: vendor_name(&vendor),
        device: fsx::read_opt(&dir.join("device")).unwrap_or_default(),
        class: fsx::read_opt(&dir.join("class")).unwrap_or_default(),
        numa_node: numa_node_of(dir),
        local_cpus: fsx::read_opt(&dir.join("local_cpulist")),
        vendor,
    })
}

/// PCI accelerators, sorted by bus id.
pub fn accelerators(roots: &Roots) -> Vec<PciDevice> {
    let base = roots.sys.join("bus/pci/devices");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&base) else {
        return out;
    };
    for e in rd.flatten() {
        let bdf = e.file_name().to_string_lossy().into_owned();
        if let Some(d) = pci_device(&e.path(), &bdf) {
            if is_accelerator(&d.vendor, &d.class) {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out
}

/// Normalise a bus id as nvidia-smi prints it (`00000000:81:00.0`) to the
/// sysfs form (`0000:81:00.0`), lower case.
pub fn normalise_bdf(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [dom, bus, devfn] => {
            let dom = dom.trim_start_matches('0');
            let dom = format!("{:0>4}", if dom.is_empty() { "0" } else { dom });
            format!("{dom}:{bus}:{devfn}")
        }
        [bus, devfn] => format!("0000:{bus}:{devfn}"),
        _ => s,
    }
}

/// NICs backed by a device (loopback and purely virtual interfaces have no
/// `device` link and are skipped).
pub fn nics(roots: &Roots) -> Vec<Nic> {
    let base = roots.sys.join("class/net");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&base) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dev = e.path().join("device");
        if !dev.exists() {
            continue;
        }
        let bdf = fs::canonicalize(&dev)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.matches(':').count() == 2);
        let irqs = fsx::numbered_entries(&dev.join("msi_irqs"), "")
            .into_iter()
            .map(|n| irq::place(roots, n))
            .collect();
        out.push(Nic {
            name,
            bdf,
            numa_node: numa_node_of(&dev),
            local_cpus: fsx::read_opt(&dev.join("local_cpulist")),
            irqs,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
