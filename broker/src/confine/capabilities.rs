//! The broker's capabilities: only those opening files needs, the bounding and ambient
//! sets cleared where the process may clear them.

use super::ConfineError;
use caps::{CapSet, Capability, CapsHashSet};

/// Keep exactly what serving the policy needs (and, in spawn mode, signalling the
/// worker); also whether the bounding set had to be left as given.
pub(super) fn narrow_capabilities(
    writes: bool,
    chown: bool,
    signals_worker: bool,
) -> Result<(Vec<Capability>, bool), ConfineError> {
    let mut keep = vec![(
        Capability::CAP_DAC_READ_SEARCH,
        "to open files beneath directories the worker cannot search",
    )];
    if writes {
        keep.push((
            Capability::CAP_DAC_OVERRIDE,
            "for the write or create access it grants",
        ));
    }
    if chown {
        keep.push((
            Capability::CAP_CHOWN,
            "for the owner or group it gives created files",
        ));
    }
    if signals_worker {
        keep.push((
            Capability::CAP_KILL,
            "to signal the worker it started, and for the worker's parent-death signal",
        ));
    }
    let err = |op| move |source| ConfineError::Capabilities { op, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read the permitted set"))?;
    let missing: Vec<(Capability, &'static str)> = keep
        .iter()
        .filter(|(c, _)| !permitted.contains(c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(ConfineError::MissingCapability {
            missing,
            needed: keep.iter().map(|(c, _)| *c).collect(),
        });
    }
    let keep: Vec<Capability> = keep.into_iter().map(|(c, _)| c).collect();
    let keep_set: CapsHashSet = keep.iter().copied().collect();
    // Bounding first: dropping from it needs CAP_SETPCAP, which goes with the rest. A
    // broker started unprivileged does not have it and keeps the set it was given.
    let can_narrow = permitted.contains(&Capability::CAP_SETPCAP);
    let mut bounding_kept = false;
    for cap in caps::all() {
        if !keep_set.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            if !can_narrow {
                bounding_kept = true;
                continue;
            }
            caps::drop(None, CapSet::Bounding, cap).map_err(err("drop from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("clear the inheritable set"))?;
    caps::set(None, CapSet::Effective, &keep_set).map_err(err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep_set).map_err(err("set the permitted set"))?;
    Ok((keep, bounding_kept))
}
