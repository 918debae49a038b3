//! A node's hosting capability and the total order that ranks candidate hosts.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// What a node offers as generator host; field order gives the derived order (GPU, then memory).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Capability {
    /// Whether the node has a GPU usable for generator training; outranks any amount of memory.
    pub gpu: bool,
    /// Memory the node can give the host role, in MiB; breaks ties between equal GPU status.
    pub memory_mb: u64,
}

impl Capability {
    /// A capability from its two parts, for terse construction in drivers and tests.
    pub fn new(gpu: bool, memory_mb: u64) -> Self {
        Self { gpu, memory_mb }
    }
}

/// Ranks two (capability, id) hosts: GPU, then memory, then smaller id; total, same on every node.
pub fn rank<N: Ord>(a: (&Capability, &N), b: (&Capability, &N)) -> Ordering {
    a.0.cmp(b.0).then_with(|| b.1.cmp(a.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_outranks_any_memory() {
        let gpu = Capability::new(true, 1);
        let cpu = Capability::new(false, u64::MAX);
        assert_eq!(rank((&gpu, &9u32), (&cpu, &0u32)), Ordering::Greater);
        assert_eq!(rank((&cpu, &0u32), (&gpu, &9u32)), Ordering::Less);
    }

    #[test]
    fn memory_breaks_gpu_ties() {
        let big = Capability::new(false, 32_000);
        let small = Capability::new(false, 8_000);
        assert_eq!(rank((&big, &5u32), (&small, &1u32)), Ordering::Greater);
        let big = Capability::new(true, 32_000);
        let small = Capability::new(true, 8_000);
        assert_eq!(rank((&big, &5u32), (&small, &1u32)), Ordering::Greater);
    }

    #[test]
    fn smaller_id_breaks_full_ties_and_order_is_total() {
        let c = Capability::new(true, 16_000);
        assert_eq!(rank((&c, &1u32), (&c, &2u32)), Ordering::Greater);
        assert_eq!(rank((&c, &2u32), (&c, &2u32)), Ordering::Equal);
        // Antisymmetry and transitivity over a small grid.
        let caps = [
            Capability::new(false, 0),
            Capability::new(false, 10),
            Capability::new(true, 0),
            Capability::new(true, 10),
        ];
        let all: Vec<(Capability, u32)> = caps
            .iter()
            .flat_map(|c| (0..3u32).map(move |i| (*c, i)))
            .collect();
        for a in &all {
            for b in &all {
                let ab = rank((&a.0, &a.1), (&b.0, &b.1));
                assert_eq!(ab, rank((&b.0, &b.1), (&a.0, &a.1)).reverse());
                assert_eq!(ab == Ordering::Equal, a == b);
                for c in &all {
                    if ab == Ordering::Greater
                        && rank((&b.0, &b.1), (&c.0, &c.1)) == Ordering::Greater
                    {
                        assert_eq!(rank((&a.0, &a.1), (&c.0, &c.1)), Ordering::Greater);
                    }
                }
            }
        }
    }
}
