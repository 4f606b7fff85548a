//! Scoring among feasible nodes: spread the pods of one controller across
//! nodes first (kube's PodTopologySpread/SelectorSpread default), then
//! prefer the least allocated node (NodeResourcesFit LeastAllocated, with
//! kube's non-zero defaults for pods without requests so that empty pods
//! spread too). Ties are broken at random, as kube-scheduler does.

use rand::Rng;

use super::filter::{NodeInfo, PodInfo};

/// Weight of spreading over least-allocated (both score 0..=100).
const SPREAD_WEIGHT: i64 = 2;

/// 0..=100: how free `node` stays for cpu and memory with `pod` on it.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let mut sum = 0i64;
    let mut n = 0i64;
    for r in ["cpu", "memory"] {
        let alloc = node.allocatable.get(r).copied().unwrap_or(0);
        if alloc <= 0 {
            continue;
        }
        let used = node.nonzero_requested.get(r).copied().unwrap_or(0)
            + pod.nonzero_requests.get(r).copied().unwrap_or(0);
        let free = (alloc - used).max(0);
        sum += (free * 100 / alloc) as i64;
        n += 1;
    }
    if n == 0 {
        0
    } else {
        sum / n
    }
}

/// How many pods of `pod`'s controller `node` already runs.
pub fn same_owner_count(pod: &PodInfo, node: &NodeInfo) -> i64 {
    match &pod.owner {
        None => 0,
        Some(uid) => node
            .pods
            .iter()
            .filter(|p| p.owner.as_deref() == Some(uid.as_str()))
            .count() as i64,
    }
}

/// Scores of the `feasible` nodes, in their order.
pub fn scores(pod: &PodInfo, nodes: &[NodeInfo], feasible: &[usize]) -> Vec<i64> {
    let counts: Vec<i64> = feasible
        .iter()
        .map(|i| same_owner_count(pod, &nodes[*i]))
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    feasible
        .iter()
        .zip(&counts)
        .map(|(i, c)| {
            let spread = if max == 0 { 100 } else { (max - c) * 100 / max };
            SPREAD_WEIGHT * spread + least_allocated(pod, &nodes[*i])
        })
        .collect()
}

/// The chosen node's index into `nodes`, among `feasible` (not empty).
pub fn pick(pod: &PodInfo, nodes: &[NodeInfo], feasible: &[usize]) -> Option<usize> {
    let s = scores(pod, nodes, feasible);
    let best = *s.iter().max()?;
    let ties: Vec<usize> = feasible
        .iter()
        .zip(&s)
        .filter(|(_, v)| **v == best)
        .map(|(i, _)| *i)
        .collect();
    Some(ties[rand::thread_rng().gen_range(0..ties.len())])
}
