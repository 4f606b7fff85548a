//! The live overview (`api/watch`): one stream per viewer, fed by watches
//! the dashboard makes *with the viewer's own token*.
//!
//! The page cannot watch the API server itself: the API server is another
//! origin (no CORS), its certificate is signed by the cluster's private CA,
//! and from a phone it may not even be routable. So the node makes the
//! watches on the viewer's behalf, with a client that carries only the
//! viewer's bearer token, and sends the page one newline-delimited JSON
//! document per change over a single streamed response (`fetch` with an
//! `Authorization` header; `EventSource` cannot send one).
//!
//! Each kind is followed by kube-rs's `watcher`: list, then watch from the
//! list's resourceVersion, resume from the last seen resourceVersion when a
//! watch ends, re-list when the API answers 410 Gone, back off
//! exponentially after errors. The page reconnects to this stream with its
//! own back-off when the stream breaks.
//!
//! Invariants:
//! - Every watch is made with the viewer's client; the node's identity is
//!   never used (only the CA and server URL come from its kubeconfig).
//! - A kind the viewer may not read (the API answers an error status)
//!   shows that error and no objects, never stale data; a 410 Gone is not
//!   an error (the watcher re-lists).
//! - The watches live exactly as long as the viewer's response: when the
//!   page goes away the body is dropped, the send fails or the channel
//!   closes, and the task ends, dropping every watch.
//! - A document is sent only when it differs from the last one, at most
//!   once per [`SETTLE`], plus a heartbeat line every [`HEARTBEAT`] so a
//!   dead connection is noticed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use super::overview::{self, Inputs, Overview};

/// How long a burst of changes may take before the next document is sent.
pub const SETTLE: Duration = Duration::from_millis(300);
/// How often an empty line is sent when nothing changes.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The objects of one kind as a viewer's watch sees them.
pub struct Watched<K> {
    objects: BTreeMap<String, K>,
    /// Objects of a re-list in progress (swapped in at `InitDone`).
    relist: Option<BTreeMap<String, K>>,
    /// The API's refusal, shown instead of the objects.
    error: Option<String>,
    synced: bool,
}

impl<K> Default for Watched<K> {
    fn default() -> Self {
        Watched { objects: BTreeMap::new(), relist: None, error: None, synced: false }
    }
}

/// What a watch error means for the view.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// Nothing to show: the watcher re-lists (410 Gone) or retries a
    /// broken connection over data that is still current.
    Transient,
    /// The API refused this kind (403, 404, …): show this instead of data.
    Refused(String),
    /// The token itself was refused (401).
    Unauthorized(String),
}

/// Classifies a watcher error.
pub fn classify(e: &watcher::Error, synced: bool) -> Failure {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
        watcher::Error::WatchError(s) => Some((s.code, s.message.clone())),
        _ => None,
    };
    match status {
        Some((410, _)) => Failure::Transient,
        Some((401, m)) => Failure::Unauthorized(format!("the API server refused the token: {m} (401)")),
        Some((code, m)) => Failure::Refused(format!("{m} ({code})")),
        // Before the first list the viewer has nothing; say why.
        None if !synced => Failure::Refused(e.to_string()),
        None => Failure::Transient,
    }
}

impl<K: Resource + Clone> Watched<K> {
    /// Applies one watcher item; returns the failure, if any.
    pub fn apply(&mut self, item: watcher::Result<watcher::Event<K>>) -> Option<Failure> {
        let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        match item {
            Ok(watcher::Event::Init) => self.relist = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(o)) => {
                self.relist.get_or_insert_with(BTreeMap::new).insert(key(&o), o);
            }
            Ok(watcher::Event::InitDone) => {
                self.objects = self.relist.take().unwrap_or_default();
                self.error = None;
                self.synced = true;
            }
            Ok(watcher::Event::Apply(o)) => {
                self.objects.insert(key(&o), o);
                self.error = None;
            }
            Ok(watcher::Event::Delete(o)) => {
                self.objects.remove(&key(&o));
            }
            Err(e) => {
                let failure = classify(&e, self.synced);
                if let Failure::Refused(m) | Failure::Unauthorized(m) = &failure {
                    self.error = Some(m.clone());
                    self.objects.clear();
                    self.synced = false;
                }
                return Some(failure);
            }
        }
        None
    }

    /// The objects, or the refusal; `None` until the first list is in.
    pub fn view(&self) -> Option<Result<Vec<K>, String>> {
        match (&self.error, self.synced) {
            (Some(e), _) => Some(Err(e.clone())),
            (None, true) => Some(Ok(self.objects.values().cloned().collect())),
            (None, false) => None,
        }
    }
}

/// Everything one viewer watches.
#[derive(Default)]
pub struct ViewerState {
    pub nodes: Watched<Node>,
    pub ingresses: Watched<Ingress>,
    pub classes: Watched<IngressClass>,
    pub services: Watched<Service>,
    pub slices: Watched<EndpointSlice>,
    pub pods: Watched<Pod>,
    pub events: Watched<Event>,
}

/// One item from any of the viewer's watches.
pub enum Change {
    Nodes(watcher::Result<watcher::Event<Node>>),
    Ingresses(watcher::Result<watcher::Event<Ingress>>),
    Classes(watcher::Result<watcher::Event<IngressClass>>),
    Services(watcher::Result<watcher::Event<Service>>),
    Slices(watcher::Result<watcher::Event<EndpointSlice>>),
    Pods(watcher::Result<watcher::Event<Pod>>),
    Events(watcher::Result<watcher::Event<Event>>),
}

impl ViewerState {
    pub fn apply(&mut self, change: Change) -> Option<Failure> {
        match change {
            Change::Nodes(i) => self.nodes.apply(i),
            Change::Ingresses(i) => self.ingresses.apply(i),
            Change::Classes(i) => self.classes.apply(i),
            Change::Services(i) => self.services.apply(i),
            Change::Slices(i) => self.slices.apply(i),
            Change::Pods(i) => self.pods.apply(i),
            Change::Events(i) => self.events.apply(i),
        }
    }

    /// The overview, once every kind has been listed or refused.
    pub fn overview(&self) -> Option<Overview> {
        Some(overview::assemble(Inputs {
            nodes: self.nodes.view()?,
            ingresses: self.ingresses.view()?,
            // Unreadable classes count as none: only the defaults are served.
            classes: self.classes.view()?.unwrap_or_default(),
            services: self.services.view()?,
            slices: self.slices.view()?,
            pods: self.pods.view()?,
            events: self.events.view()?,
        }))
    }
}

fn watch<K>(
    client: &kube::Client,
    config: watcher::Config,
    wrap: fn(watcher::Result<watcher::Event<K>>) -> Change,
) -> BoxStream<'static, Change>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .map(wrap)
        .boxed()
}

/// The viewer's watches, merged.
pub fn watches(client: &kube::Client) -> SelectAll<BoxStream<'static, Change>> {
    let all = watcher::Config::default;
    futures::stream::select_all([
        watch(client, all(), Change::Nodes),
        watch(client, all(), Change::Ingresses),
        watch(client, all(), Change::Classes),
        watch(client, all(), Change::Services),
        watch(client, all(), Change::Slices),
        watch(client, all(), Change::Pods),
        watch(client, all().fields(overview::WARNINGS), Change::Events),
    ])
}

/// One line of the stream.
pub fn line(value: &serde_json::Value) -> bytes::Bytes {
    let mut s = value.to_string();
    s.push('\n');
    bytes::Bytes::from(s)
}

/// Feeds `tx` with the viewer's overview until the viewer goes away or its
/// token is refused (then a last `{"unauthorized": …}` line ends it).
pub async fn run<S>(mut changes: S, tx: mpsc::Sender<Result<bytes::Bytes, Infallible>>)
where
    S: futures::Stream<Item = Change> + Unpin,
{
    let mut state = ViewerState::default();
    let mut last_sent = String::new();
    let mut dirty = false;
    let settle = tokio::time::sleep(SETTLE);
    tokio::pin!(settle);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            change = changes.next() => {
                let Some(change) = change else { return };
                if let Some(Failure::Unauthorized(m)) = state.apply(change) {
                    let _ = tx.send(Ok(line(&serde_json::json!({ "unauthorized": m })))).await;
                    return;
                }
                if !dirty {
                    dirty = true;
                    settle.as_mut().reset(tokio::time::Instant::now() + SETTLE);
                }
            }
            _ = &mut settle, if dirty => {
                dirty = false;
                let Some(overview) = state.overview() else { continue };
                let doc = serde_json::json!({ "overview": overview }).to_string();
                if doc != last_sent {
                    let mut body = doc.clone();
                    body.push('\n');
                    if tx.send(Ok(bytes::Bytes::from(body))).await.is_err() {
                        return;
                    }
                    last_sent = doc;
                }
            }
            _ = heartbeat.tick() => {
                if tx.send(Ok(bytes::Bytes::from_static(b"\n"))).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap()
    }

    fn refused(code: u16) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(kube::core::Status::failure(
            "nodes is forbidden",
            "Forbidden",
        )
        .with_code(code))))
    }

    fn synced_empty<K: Resource + Clone>() -> Watched<K> {
        let mut w = Watched::default();
        w.apply(Ok(watcher::Event::Init));
        w.apply(Ok(watcher::Event::InitDone));
        w
    }

    #[test]
    fn a_watch_follows_lists_applies_and_deletes() {
        let mut w = Watched::<Node>::default();
        assert!(w.view().is_none(), "nothing to show before the first list");
        w.apply(Ok(watcher::Event::Init));
        w.apply(Ok(watcher::Event::InitApply(node("a", "True"))));
        assert!(w.view().is_none(), "a list in progress is not shown");
        w.apply(Ok(watcher::Event::InitDone));
        w.apply(Ok(watcher::Event::Apply(node("b", "False"))));
        let names = |w: &Watched<Node>| w.view().unwrap().unwrap().iter().map(|n| n.name_any()).collect::<Vec<_>>();
        assert_eq!(names(&w), ["a", "b"]);
        w.apply(Ok(watcher::Event::Delete(node("a", "True"))));
        assert_eq!(names(&w), ["b"]);
        // A re-list (after 410 Gone) replaces everything at its end.
        w.apply(Ok(watcher::Event::Init));
        w.apply(Ok(watcher::Event::InitApply(node("c", "True"))));
        assert_eq!(names(&w), ["b"], "the old view stays until the re-list is complete");
        w.apply(Ok(watcher::Event::InitDone));
        assert_eq!(names(&w), ["c"]);
    }

    #[test]
    fn refusals_replace_data_and_gone_does_not() {
        let mut w = synced_empty::<Node>();
        w.apply(Ok(watcher::Event::Apply(node("a", "True"))));
        let gone = watcher::Error::WatchError(Box::new(
            kube::core::Status::failure("too old resource version", "Expired").with_code(410),
        ));
        assert_eq!(w.apply(Err(gone)), Some(Failure::Transient));
        assert_eq!(w.view().unwrap().unwrap().len(), 1, "410 keeps the view; the watcher re-lists");
        assert!(matches!(w.apply(Err(refused(403))), Some(Failure::Refused(m)) if m.contains("forbidden")));
        assert_eq!(w.view().unwrap().unwrap_err(), "nodes is forbidden (403)", "an error, never stale data");
        assert!(matches!(w.apply(Err(refused(401))), Some(Failure::Unauthorized(_))));
    }

    #[test]
    fn the_overview_waits_for_every_kind_and_shows_refusals() {
        let mut s = ViewerState::default();
        s.apply(Change::Nodes(Ok(watcher::Event::Init)));
        s.apply(Change::Nodes(Ok(watcher::Event::InitApply(node("agent", "True")))));
        s.apply(Change::Nodes(Ok(watcher::Event::InitDone)));
        assert!(s.overview().is_none(), "other kinds are not listed yet");
        s.ingresses = synced_empty();
        s.classes.apply(Err(refused(403)));
        s.services = synced_empty();
        s.slices = synced_empty();
        s.pods.apply(Err(refused(403)));
        s.events = synced_empty();
        let o = s.overview().expect("every kind listed or refused");
        assert_eq!(o.nodes.items.len(), 1);
        assert!(o.nodes.items[0].ready);
        assert!(o.routers.error.is_none(), "unreadable classes mean only the defaults");
        assert_eq!(o.pods.error.as_deref(), Some("nodes is forbidden (403)"));
    }

    /// The next document on the stream, skipping heartbeats.
    async fn next(rx: &mut mpsc::Receiver<Result<bytes::Bytes, Infallible>>) -> serde_json::Value {
        loop {
            let b = rx.recv().await.expect("a line").unwrap();
            if b.as_ref() != b"\n" {
                return serde_json::from_slice(&b).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn the_stream_sends_changed_documents_and_stops_on_a_refused_token() {
        let (changes_tx, changes_rx) = mpsc::unbounded_channel::<Change>();
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(run(tokio_stream::wrappers::UnboundedReceiverStream::new(changes_rx), tx));
        for init in [
            Change::Nodes(Ok(watcher::Event::Init)),
            Change::Nodes(Ok(watcher::Event::InitApply(node("agent", "True")))),
            Change::Nodes(Ok(watcher::Event::InitDone)),
            Change::Ingresses(Ok(watcher::Event::InitDone)),
            Change::Classes(Ok(watcher::Event::InitDone)),
            Change::Services(Ok(watcher::Event::InitDone)),
            Change::Slices(Ok(watcher::Event::InitDone)),
            Change::Pods(Ok(watcher::Event::InitDone)),
            Change::Events(Ok(watcher::Event::InitDone)),
        ] {
            changes_tx.send(init).unwrap();
        }
        let first = next(&mut rx).await;
        assert_eq!(first["overview"]["nodes"]["items"][0]["name"], "agent");
        assert_eq!(first["overview"]["nodes"]["items"][0]["ready"], true);
        changes_tx.send(Change::Nodes(Ok(watcher::Event::Apply(node("agent", "False"))))).unwrap();
        let second = next(&mut rx).await;
        assert_eq!(second["overview"]["nodes"]["items"][0]["ready"], false, "{second}");
        changes_tx.send(Change::Pods(Err(refused(401)))).unwrap();
        let last = next(&mut rx).await;
        assert!(last["unauthorized"].as_str().unwrap().contains("401"), "{last}");
        task.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends after a refused token");
    }
}
