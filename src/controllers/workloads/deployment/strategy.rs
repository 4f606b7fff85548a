//! How a Deployment moves between ReplicaSets: a replica-count change
//! (kube's proportional `scale`), a rolling update step within
//! maxSurge/maxUnavailable, a Recreate step, and history cleanup.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;

use super::{created, revision_of, rs_replicas, rs_status, Rollout, DESIRED_REPLICAS};
use crate::controllers::workloads::common::*;
use crate::controllers::workloads::rollout;

impl Rollout<'_> {
    /// kube's `scale`: a replica-count change outside of a template change.
    pub(super) async fn proportional_scale(&mut self) -> Result<()> {
        let active: Vec<usize> = (0..self.olds.len())
            .filter(|i| rs_replicas(&self.olds[*i]) > 0)
            .collect();
        let new_active = self.new_rs.as_ref().is_some_and(|r| rs_replicas(r) > 0);
        if active.is_empty() {
            if self.new_rs.is_some() {
                self.scale_new(self.replicas).await?;
            } else if let Some(i) = (0..self.olds.len()).max_by_key(|i| created(&self.olds[*i])) {
                self.scale_old(i, self.replicas).await?;
            }
            return Ok(());
        }
        if active.len() == 1 && !new_active {
            return self.scale_old(active[0], self.replicas).await;
        }
        let saturated = self
            .new_rs
            .as_ref()
            .is_some_and(|r| rs_replicas(r) == self.replicas && rs_status(r).2 == self.replicas);
        if saturated {
            for i in active {
                self.scale_old(i, 0).await?;
            }
            return Ok(());
        }
        if self.strategy_is_recreate() {
            return Ok(());
        }
        let total: i32 = self.all().iter().map(|r| rs_replicas(r)).sum();
        let allowed = if self.replicas > 0 {
            self.replicas + self.surge
        } else {
            0
        };
        let mut to_add = allowed - total;
        if to_add == 0 || total == 0 {
            return Ok(());
        }
        let sizes: Vec<(Option<usize>, i32)> = self
            .new_rs
            .iter()
            .map(|r| (None, rs_replicas(r)))
            .chain(
                active
                    .iter()
                    .map(|i| (Some(*i), rs_replicas(&self.olds[*i]))),
            )
            .collect();
        let mut targets = Vec::new();
        for (idx, size) in &sizes {
            let share =
                ((f64::from(*size) * f64::from(allowed - total)) / f64::from(total)).round() as i32;
            let share = if to_add > 0 {
                share.min(to_add)
            } else {
                share.max(to_add)
            };
            to_add -= share;
            targets.push((*idx, (size + share).max(0)));
        }
        if let Some(first) = targets.first_mut() {
            first.1 = (first.1 + to_add).max(0);
        }
        for (idx, n) in targets {
            match idx {
                None => {
                    self.scale_new(n).await?;
                }
                Some(i) => self.scale_old(i, n).await?,
            }
        }
        Ok(())
    }

    pub(super) fn is_scaling_event(&self) -> bool {
        let want = self.replicas.to_string();
        self.all()
            .into_iter()
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| {
                r.annotations()
                    .get(DESIRED_REPLICAS)
                    .is_some_and(|v| *v != want)
            })
    }

    pub(super) async fn rolling(&mut self) -> Result<Option<Duration>> {
        self.new_replica_set(true).await?;
        // Grow the new ReplicaSet.
        if let Some(new_rs) = self.new_rs.clone() {
            let cur = rs_replicas(&new_rs);
            // Old pods still being removed count too, so maxSurge bounds
            // the pods that exist, not only the ReplicaSets' specs.
            let total: i32 = self
                .all()
                .iter()
                .map(|r| rs_replicas(r).max(rs_status(r).0))
                .sum();
            let target = if cur > self.replicas {
                self.replicas
            } else {
                rollout::new_rs_replicas(self.replicas, self.surge, total, cur)
            };
            if target != cur {
                self.scale_new(target).await?;
                return Ok(None);
            }
        }
        // Shrink the old ones.
        let old_total: i32 = self.olds.iter().map(rs_replicas).sum();
        if old_total > 0 {
            let all_pods: i32 = self.all().iter().map(|r| rs_replicas(r)).sum();
            let (new_n, new_avail) = self
                .new_rs
                .as_ref()
                .map(|r| (rs_replicas(r), rs_status(r).2))
                .unwrap_or((0, 0));
            let mut budget = rollout::old_scale_down_budget(
                self.replicas,
                self.unavailable,
                all_pods,
                new_n,
                new_avail,
            );
            if budget <= 0 {
                // No room: ReplicaSet statuses may lag their specs, so never
                // count on availability the specs already gave away.
                self.cleanup_if_complete().await?;
                return Ok(None);
            }
            let mut order: Vec<usize> = (0..self.olds.len()).collect();
            order.sort_by_key(|i| created(&self.olds[*i]));
            let mut scaled = false;
            // Unhealthy replicas first: they cost no availability.
            for &i in &order {
                if budget <= 0 {
                    break;
                }
                let n = rs_replicas(&self.olds[i]);
                let unhealthy = n - rs_status(&self.olds[i]).2;
                if n == 0 || unhealthy <= 0 {
                    continue;
                }
                let k = unhealthy.min(budget);
                self.scale_old(i, n - k).await?;
                budget -= k;
                scaled = true;
            }
            let available: i32 = self.all().iter().map(|r| rs_status(r).2).sum();
            let mut healthy =
                rollout::healthy_scale_down(self.replicas, self.unavailable, available).min(budget);
            for &i in &order {
                if healthy <= 0 {
                    break;
                }
                let n = rs_replicas(&self.olds[i]);
                if n == 0 {
                    continue;
                }
                let k = n.min(healthy);
                self.scale_old(i, n - k).await?;
                healthy -= k;
                scaled = true;
            }
            if scaled {
                return Ok(None);
            }
        }
        self.cleanup_if_complete().await?;
        Ok(None)
    }

    pub(super) async fn recreate(&mut self) -> Result<Option<Duration>> {
        self.new_replica_set(false).await?;
        let mut scaled = false;
        for i in 0..self.olds.len() {
            if rs_replicas(&self.olds[i]) > 0 {
                self.scale_old(i, 0).await?;
                scaled = true;
            }
        }
        if scaled {
            return Ok(None);
        }
        if self.old_pods_running().await? {
            return Ok(Some(Duration::from_secs(2)));
        }
        if self.new_rs.is_none() {
            self.new_replica_set(true).await?;
        }
        self.scale_new(self.replicas).await?;
        self.cleanup_if_complete().await?;
        Ok(None)
    }

    async fn old_pods_running(&self) -> Result<bool> {
        if self.olds.iter().any(|r| rs_status(r).0 > 0) {
            return Ok(true);
        }
        let uids: Vec<String> = self.olds.iter().filter_map(|r| r.uid()).collect();
        let pods: Api<Pod> = Api::namespaced(
            self.shared.client(),
            &self.d.namespace().unwrap_or_default(),
        );
        let list = list_all(&pods, "pods").await?;
        Ok(list.iter().any(|p| {
            controller_uid(&p.metadata).is_some_and(|u| uids.iter().any(|x| x == u))
                && !matches!(pod_phase(p), "Succeeded" | "Failed")
        }))
    }

    /// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit` once the rollout completed.
    pub(super) async fn cleanup_if_complete(&mut self) -> Result<()> {
        let st = self.d.status.clone().unwrap_or_default();
        let complete = st.updated_replicas.unwrap_or(0) == self.replicas
            && st.replicas.unwrap_or(0) == self.replicas
            && st.available_replicas.unwrap_or(0) == self.replicas
            && st.observed_generation >= self.d.metadata.generation;
        if complete {
            self.cleanup().await?;
        }
        Ok(())
    }

    pub(super) async fn cleanup(&mut self) -> Result<()> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut cleanable: Vec<&ReplicaSet> = self
            .olds
            .iter()
            .filter(|r| {
                rs_replicas(r) == 0
                    && rs_status(r).0 == 0
                    && r.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by_key(|r| (revision_of(&r.metadata), created(r)));
        let n = cleanable.len() - limit;
        for rs in cleanable.into_iter().take(n) {
            delete_quiet(&self.api, &rs.name_any(), &background()).await?;
        }
        Ok(())
    }
}
