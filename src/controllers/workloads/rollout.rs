//! The Deployment's rollout arithmetic, pure so it is tested on its own:
//! `maxSurge`/`maxUnavailable` resolution with kube's rounding (surge up,
//! unavailable down, never both zero), and how far the new ReplicaSet may
//! grow and the old ones shrink in one step.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// kube's `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let x = pct * i64::from(total);
            let v = if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `replicas`, defaults 25%/25%; if both
/// resolve to zero, one pod may be unavailable (kube's `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), replicas, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), replicas, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// How many replicas the new ReplicaSet should have now (kube's `NewRSNewReplicas`):
/// grow until all ReplicaSets together reach `replicas + maxSurge`.
pub fn new_rs_replicas(replicas: i32, max_surge: i32, total_current: i32, new_current: i32) -> i32 {
    let max_total = replicas + max_surge;
    if total_current >= max_total {
        return new_current;
    }
    let scale_up = max_total - total_current;
    new_current + scale_up.min(replicas - new_current).max(0)
}

/// How many old replicas may go now (kube's `reconcileOldReplicaSets`
/// bound): keep `replicas - maxUnavailable` available, not counting the
/// new ReplicaSet's pods that are not available yet.
pub fn old_scale_down_budget(
    replicas: i32,
    max_unavailable: i32,
    all_pods: i32,
    new_rs_replicas: i32,
    new_rs_available: i32,
) -> i32 {
    let min_available = replicas - max_unavailable;
    let new_unavailable = new_rs_replicas - new_rs_available;
    (all_pods - min_available - new_unavailable).max(0)
}

/// Healthy old replicas that may go after unhealthy ones were removed:
/// everything available above `replicas - maxUnavailable`.
pub fn healthy_scale_down(replicas: i32, max_unavailable: i32, available: i32) -> i32 {
    (available - (replicas - max_unavailable)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(resolve_fenceposts(None, None, 3), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(None, None, 10), Ok((3, 2)));
        assert_eq!(
            resolve_fenceposts(Some(&s("50%")), Some(&s("50%")), 5),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 3),
            Ok((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&s("0%")), 4),
            Ok((2, 0))
        );
        assert!(resolve_fenceposts(Some(&s("x")), None, 3).is_err());
    }

    #[test]
    fn new_replica_set_grows_within_surge() {
        // 3 replicas, surge 1: the first step adds one pod.
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        // Already at replicas + surge: wait.
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1);
        // Never past the desired count.
        assert_eq!(new_rs_replicas(3, 10, 3, 2), 3);
    }

    #[test]
    fn old_replica_sets_shrink_within_unavailable() {
        // 3 desired, 0 unavailable allowed, 4 pods, new one not ready: nothing goes.
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 0), 0);
        // The new pod became available: one old may go.
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 1), 1);
        assert_eq!(healthy_scale_down(3, 0, 4), 1);
        assert_eq!(healthy_scale_down(3, 1, 2), 0);
    }
}
