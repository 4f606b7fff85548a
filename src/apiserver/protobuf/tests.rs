//! Round trips through real `k8s-pb` values, encoded the way Go's generated marshallers do:
//! non-pointer scalars are always on the wire (so they arrive as `Some("")`/`Some(0)`), pointer
//! fields only when set, and non-pointer structs always (possibly empty).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::*;

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn body<M: Message>(api_version: &str, kind: &str, message: &M) -> Vec<u8> {
    encode_envelope(api_version, kind, message.encode_to_vec())
}

/// ObjectMeta as Go writes it for a new object: every string present, zero generation, zero time.
fn go_meta(name: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn int_or_string_int(value: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(value),
        str_val: s(""),
    })
}

fn int_or_string_str(value: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(value),
    })
}

fn web_deployment() -> apps::Deployment {
    let container = core::Container {
        name: s("web"),
        image: s("busybox"),
        working_dir: s(""),
        ports: vec![core::ContainerPort {
            name: s(""),
            host_port: Some(0),
            container_port: Some(80),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env: vec![core::EnvVar {
            name: s("MODE"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    local_object_reference: Some(core::LocalObjectReference {
                        name: s("settings"),
                    }),
                    key: s("mode"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([("cpu".to_string(), Quantity { string: s("500m") })]),
            ..Default::default()
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: int_or_string_int(8080),
                    host: s(""),
                    scheme: s(""),
                    http_headers: vec![],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            timeout_seconds: Some(0),
            period_seconds: Some(10),
            success_threshold: Some(0),
            failure_threshold: Some(0),
            termination_grace_period_seconds: None,
        }),
        termination_message_path: s(""),
        termination_message_policy: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            deletion_timestamp: Some(meta::Time {
                seconds: Some(1_704_164_645),
                nanos: Some(0),
            }),
            ..go_meta("web", &[("app", "web")])
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(go_meta("", &[("app", "web")])),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    restart_policy: s(""),
                    termination_grace_period_seconds: Some(0),
                    dns_policy: s(""),
                    service_account_name: s(""),
                    automount_service_account_token: Some(false),
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int_or_string_int(1),
                    max_surge: int_or_string_str("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(0),
            paused: Some(false),
            progress_deadline_seconds: None,
        }),
        status: Some(apps::DeploymentStatus::default()),
    }
}

#[test]
fn decodes_a_deployment_like_go_would_serialize_it() {
    let decoded = decode(&body("apps/v1", "Deployment", &web_deployment())).unwrap();
    let expected = json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": "web",
            "creationTimestamp": null,
            "deletionTimestamp": "2024-01-02T03:04:05Z",
            "labels": {"app": "web"}
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "busybox",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode", "optional": false}}
                        }],
                        "resources": {"limits": {"cpu": "500m"}},
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080},
                            "periodSeconds": 10
                        }
                    }],
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": false
                }
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}
            },
            "revisionHistoryLimit": 0
        },
        "status": {}
    });
    assert_eq!(decoded, expected);
    let keys: Vec<_> = decoded
        .as_object()
        .unwrap()
        .keys()
        .take(2)
        .cloned()
        .collect();
    assert_eq!(keys, ["kind", "apiVersion"]);
}

#[test]
fn secret_bytes_become_base64_and_string_data_stays_text() {
    let secret = core::Secret {
        metadata: Some(go_meta("s", &[])),
        data: BTreeMap::from([
            ("k".to_string(), b"v".to_vec()),
            ("empty".to_string(), vec![]),
        ]),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let decoded = decode(&body("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"empty": "", "k": "dg=="},
            "type": "Opaque"
        })
    );
}

#[test]
fn service_ports_keep_names_acronyms_and_int_or_string() {
    let service = core::Service {
        metadata: Some(go_meta("svc", &[])),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                app_protocol: None,
                port: Some(80),
                target_port: int_or_string_int(8080),
                node_port: Some(0),
            }],
            selector: BTreeMap::from([("app".to_string(), "svc".to_string())]),
            cluster_ip: s(""),
            cluster_ips: vec!["10.43.0.20".into()],
            r#type: s("ClusterIP"),
            external_ips: vec![],
            session_affinity: s(""),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let decoded = decode(&body("v1", "Service", &service)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({
            "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": "svc"},
            "clusterIPs": ["10.43.0.20"],
            "type": "ClusterIP"
        })
    );
    assert_eq!(decoded["status"], json!({}));
}

#[test]
fn micro_time_keeps_microseconds() {
    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(go_meta("e", &[])),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_164_645),
            nanos: Some(123_456_789),
        }),
        reason: s("Started"),
        ..Default::default()
    };
    let decoded = decode(&body("events.k8s.io/v1", "Event", &event)).unwrap();
    assert_eq!(decoded["eventTime"], json!("2024-01-02T03:04:05.123456Z"));
    assert_eq!(decoded["reason"], json!("Started"));
}

#[test]
fn duration_is_a_go_duration_string() {
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1::PodMetrics;
    let metrics = PodMetrics {
        metadata: Some(go_meta("p", &[])),
        window: Some(meta::Duration {
            duration: Some(90_500_000_000),
        }),
        ..Default::default()
    };
    let decoded = decode(&body("metrics.k8s.io/v1beta1", "PodMetrics", &metrics)).unwrap();
    assert_eq!(decoded["window"], json!("1m30.5s"));
}

#[test]
fn raw_extension_embeds_its_json() {
    let revision = apps::ControllerRevision {
        metadata: Some(go_meta("rev", &[])),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"a":[1,"b"]}}"#.to_vec()),
        }),
        revision: Some(3),
    };
    let decoded = decode(&body("apps/v1", "ControllerRevision", &revision)).unwrap();
    assert_eq!(decoded["data"], json!({"spec": {"a": [1, "b"]}}));
    assert_eq!(decoded["revision"], json!(3));
}

#[test]
fn unusual_strings_survive() {
    let value = "quote \" backslash \\ newline \n tab \t nul \0 accent é combining \u{301} emoji 🦀 {a: [b]}";
    let config_map = core::ConfigMap {
        metadata: Some(go_meta("x", &[])),
        data: BTreeMap::from([
            ("a".to_string(), value.to_string()),
            ("blank".to_string(), String::new()),
        ]),
        ..Default::default()
    };
    let decoded = decode(&body("v1", "ConfigMap", &config_map)).unwrap();
    assert_eq!(decoded["data"], json!({"a": value, "blank": ""}));
}

#[test]
fn every_listed_kind_decodes() {
    for (api_version, kind) in kinds::ALL {
        let decoded = decode(&encode_envelope(api_version, kind, Vec::new()))
            .unwrap_or_else(|err| panic!("{api_version} {kind}: {err}"));
        assert_eq!(decoded, json!({"kind": kind, "apiVersion": api_version}));
    }
    assert!(kinds::ALL.len() > 100, "only {} kinds", kinds::ALL.len());
}

#[test]
fn rejects_bodies_that_are_not_envelopes() {
    assert!(matches!(
        decode(b"{\"kind\":\"Namespace\"}"),
        Err(ProtobufError::NotEnvelope(_))
    ));
    assert!(matches!(
        decode(b"k8s\0\xff\xff\xff"),
        Err(ProtobufError::NotEnvelope(_))
    ));
    let no_kind = encode_envelope("v1", "", Vec::new());
    assert!(matches!(
        decode(&no_kind),
        Err(ProtobufError::NotEnvelope(_))
    ));
}

#[test]
fn names_the_unknown_kind() {
    let err = decode(&encode_envelope("example.com/v1", "Widget", Vec::new())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to decode protobuf body: unknown kind `Widget` in `example.com/v1`"
    );
}

#[test]
fn reports_malformed_objects() {
    // Field 1 (metadata) announced as 10 bytes long, then the body ends.
    let err = decode(&encode_envelope("v1", "Namespace", vec![0x0a, 0x0a, 0x01])).unwrap_err();
    assert!(
        matches!(&err, ProtobufError::Malformed { kind, .. } if kind == "Namespace"),
        "{err}"
    );
    // A RawExtension whose bytes are not JSON.
    let revision = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"\x01\x02".to_vec()),
        }),
        ..Default::default()
    };
    let err = decode(&body("apps/v1", "ControllerRevision", &revision)).unwrap_err();
    assert!(err.to_string().contains("field `data`"), "{err}");
}

#[test]
fn rejects_compressed_content() {
    let mut unknown =
        Unknown::decode(&encode_envelope("v1", "Namespace", Vec::new())[4..]).unwrap();
    unknown.content_encoding = s("gzip");
    let mut compressed = MAGIC.to_vec();
    compressed.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&compressed),
        Err(ProtobufError::UnsupportedEncoding("gzip".into()))
    );
}

#[test]
fn custom_resource_definitions_follow_the_json_schema_rules() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let integer = ext::JsonSchemaProps {
        r#type: s("integer"),
        default: Some(ext::Json {
            raw: Some(b"3".to_vec()),
        }),
        minimum: Some(0.0),
        nullable: Some(false),
        ..Default::default()
    };
    let open = ext::JsonSchemaProps {
        r#type: s("object"),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    };
    let root = ext::JsonSchemaProps {
        r#type: s("object"),
        properties: BTreeMap::from([
            ("size".to_string(), integer.clone()),
            ("extra".to_string(), open),
        ]),
        additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool {
            allows: Some(false),
            schema: None,
        })),
        ..Default::default()
    };
    let list = ext::JsonSchemaProps {
        r#type: s("array"),
        items: Some(Box::new(ext::JsonSchemaPropsOrArray {
            schema: Some(Box::new(integer)),
            j_son_schemas: vec![],
        })),
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: Some(go_meta("widgets.example.com", &[])),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(ext::CustomResourceDefinitionNames {
                plural: s("widgets"),
                singular: s(""),
                kind: s("Widget"),
                list_kind: s(""),
                ..Default::default()
            }),
            scope: s("Namespaced"),
            versions: vec![
                ext::CustomResourceDefinitionVersion {
                    name: s("v1"),
                    served: Some(true),
                    storage: Some(true),
                    schema: Some(ext::CustomResourceValidation {
                        open_apiv3_schema: Some(root),
                    }),
                    ..Default::default()
                },
                ext::CustomResourceDefinitionVersion {
                    name: s("v0"),
                    served: Some(false),
                    storage: Some(false),
                    schema: Some(ext::CustomResourceValidation {
                        open_apiv3_schema: Some(list),
                    }),
                    ..Default::default()
                },
            ],
            preserve_unknown_fields: Some(false),
            ..Default::default()
        }),
        status: None,
    };
    let decoded = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ))
    .unwrap();
    let size = json!({"type": "integer", "default": 3, "minimum": 0});
    assert_eq!(
        decoded["spec"],
        json!({
            "group": "example.com",
            "names": {"plural": "widgets", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "size": size
                    },
                    "additionalProperties": false
                }}},
                {"name": "v0", "served": false, "storage": false, "schema": {"openAPIV3Schema": {
                    "type": "array", "items": size
                }}}
            ]
        })
    );
}

#[test]
fn managed_fields_embed_fields_v1() {
    let namespace = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl-create"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time {
                    seconds: Some(1_704_164_645),
                    nanos: Some(0),
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:metadata":{}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..go_meta("ns", &[])
        }),
        ..Default::default()
    };
    let decoded = decode(&body("v1", "Namespace", &namespace)).unwrap();
    assert_eq!(
        decoded["metadata"]["managedFields"],
        json!([{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}])
    );
}

#[test]
fn a_mebibyte_secret_decodes() {
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let secret = core::Secret {
        metadata: Some(go_meta("big", &[])),
        data: BTreeMap::from([("blob".to_string(), payload.clone())]),
        ..Default::default()
    };
    let decoded = decode(&body("v1", "Secret", &secret)).unwrap();
    let encoded = decoded["data"]["blob"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
        payload
    );
}
