//! Python for the scripts that drive the Kubernetes Python client (Debian's
//! python3-kubernetes) against a cluster: definitions a script pastes in
//! after its imports (`from kubernetes.stream import stream`).

/// `cat_echo(api, line)`: execs `cat` in pod `default/web` with stdin,
/// writes `line` and returns the first stdout that comes back (within
/// about 10 s; '' if none), then closes the websocket.
pub const CAT_ECHO: &str = r#"def cat_echo(api, line):
    ws = stream(api.connect_get_namespaced_pod_exec, 'web', 'default', command=['cat'],
                stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    ws.write_stdin(line)
    echo = ''
    for _ in range(50):
        ws.update(timeout=0.2)
        echo += ws.read_stdout() or ''
        if echo:
            break
    ws.close()
    return echo
"#;
