//! The protobuf form of `/openapi/v2` that kubectl and Helm ask for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's
//! `openapi.v2.Document` message, encoded by hand from the Swagger 2.0 JSON
//! document (field numbers from gnostic's `OpenAPIv2.proto`).
//!
//! Only what our documents contain is encoded: info, paths (operations,
//! query/path/body parameters, responses), definitions (schemas), security.
//! Values gnostic keeps as `Any` (defaults, enums, `x-` extensions) carry
//! their JSON text in `Any.yaml`, which client-go parses as YAML (JSON is
//! YAML). Unknown keys are dropped, as gnostic drops them.

use prost::encoding::encode_varint;
use serde_json::{Map, Value};

/// A protobuf message under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(&mut self, field: u32, wire: u8) {
        encode_varint(((field as u64) << 3) | wire as u64, &mut self.0);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        encode_varint(b.len() as u64, &mut self.0);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn str_of(&mut self, field: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str) {
            self.string(field, s);
        }
    }
    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }
    fn boolean(&mut self, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.key(field, 0);
            encode_varint(1, &mut self.0);
        }
    }
    fn int64(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64) {
            self.key(field, 0);
            encode_varint(n as u64, &mut self.0);
        }
    }
    fn double(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64) {
            self.key(field, 1);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
    /// `Any{yaml}` holding a JSON value.
    fn any(&mut self, field: u32, v: &Value) {
        let mut any = Msg::default();
        any.string(2, &serde_json::to_string(v).expect("serializing a JSON value"));
        self.msg(field, any);
    }
    /// Every `x-` key of `obj` as `repeated NamedAny`.
    fn extensions(&mut self, field: u32, obj: &Map<String, Value>) {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Msg::default();
            named.string(1, k);
            named.any(2, v);
            self.msg(field, named);
        }
    }
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Encode a Swagger 2.0 JSON document as `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let d = obj(doc);
    let mut m = Msg::default();
    m.str_of(1, d.get("swagger"));
    if let Some(info) = d.get("info") {
        let mut i = Msg::default();
        i.str_of(1, info.get("title"));
        i.str_of(2, info.get("version"));
        i.str_of(3, info.get("description"));
        m.msg(2, i);
    }
    m.strings(5, d.get("schemes"));
    m.strings(6, d.get("consumes"));
    m.strings(7, d.get("produces"));
    if let Some(paths) = d.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, item) in paths {
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, path_item(item));
            p.msg(2, named);
        }
        m.msg(8, p);
    }
    if let Some(defs) = d.get("definitions").and_then(Value::as_object) {
        let mut defs_msg = Msg::default();
        for (name, schema) in defs {
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, encode_schema(schema));
            defs_msg.msg(1, named);
        }
        m.msg(9, defs_msg);
    }
    for req in d.get("security").and_then(Value::as_array).into_iter().flatten() {
        let mut r = Msg::default();
        for (name, scopes) in obj(req) {
            let mut arr = Msg::default();
            arr.strings(1, Some(&scopes));
            let mut named = Msg::default();
            named.string(1, &name);
            named.msg(2, arr);
            r.msg(1, named);
        }
        m.msg(12, r);
    }
    if let Some(defs) = d.get("securityDefinitions").and_then(Value::as_object) {
        let mut s = Msg::default();
        for (name, def) in defs {
            // Only apiKey schemes are published (BearerToken).
            let mut key = Msg::default();
            key.str_of(1, def.get("type"));
            key.str_of(2, def.get("name"));
            key.str_of(3, def.get("in"));
            key.str_of(4, def.get("description"));
            let mut item = Msg::default();
            item.msg(2, key);
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, item);
            s.msg(1, named);
        }
        m.msg(13, s);
    }
    m.extensions(16, &d);
    m.0
}

fn path_item(item: &Value) -> Msg {
    let item = obj(item);
    let mut m = Msg::default();
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(method) {
            m.msg(field, operation(op));
        }
    }
    for p in item.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.msg(9, parameter(p));
    }
    m.extensions(10, &item);
    m
}

fn operation(op: &Value) -> Msg {
    let op = obj(op);
    let mut m = Msg::default();
    m.strings(1, op.get("tags"));
    m.str_of(2, op.get("summary"));
    m.str_of(3, op.get("description"));
    m.str_of(5, op.get("operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.msg(8, parameter(p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Msg::default();
        for (code, resp) in responses {
            let mut r = Msg::default();
            r.str_of(1, resp.get("description"));
            if let Some(schema) = resp.get("schema") {
                let mut item = Msg::default();
                item.msg(1, encode_schema(schema));
                r.msg(2, item);
            }
            let mut value = Msg::default();
            value.msg(1, r);
            let mut named = Msg::default();
            named.string(1, code);
            named.msg(2, value);
            rs.msg(1, named);
        }
        m.msg(9, rs);
    }
    m.strings(10, op.get("schemes"));
    m.boolean(11, op.get("deprecated"));
    m.extensions(13, &op);
    m
}

/// `ParametersItem` → `Parameter` → body or non-body (query, path, header).
fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    if p.get("in").and_then(Value::as_str) == Some("body") {
        let mut b = Msg::default();
        b.str_of(1, p.get("description"));
        b.str_of(2, p.get("name"));
        b.str_of(3, p.get("in"));
        b.boolean(4, p.get("required"));
        if let Some(s) = p.get("schema") {
            b.msg(5, encode_schema(s));
        }
        param.msg(1, b);
    } else {
        // Query and form sub-schemas have `allowEmptyValue` at 5 and
        // everything after it shifted by one compared to path and header.
        let (kind, shift) = match p.get("in").and_then(Value::as_str) {
            Some("path") => (4, 0),
            Some("header") => (1, 0),
            Some("formData") => (2, 1),
            _ => (3, 1),
        };
        let mut s = Msg::default();
        s.boolean(1, p.get("required"));
        s.str_of(2, p.get("in"));
        s.str_of(3, p.get("description"));
        s.str_of(4, p.get("name"));
        s.boolean(5, p.get("allowEmptyValue").filter(|_| shift == 1));
        s.str_of(5 + shift, p.get("type"));
        s.str_of(6 + shift, p.get("format"));
        s.boolean(19 + shift, p.get("uniqueItems"));
        let mut non_body = Msg::default();
        non_body.msg(kind, s);
        param.msg(2, non_body);
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

/// `openapi.v2.Schema`.
fn encode_schema(schema: &Value) -> Msg {
    let s = obj(schema);
    let mut m = Msg::default();
    m.str_of(1, s.get("$ref"));
    m.str_of(2, s.get("format"));
    m.str_of(3, s.get("title"));
    m.str_of(4, s.get("description"));
    if let Some(d) = s.get("default") {
        m.any(5, d);
    }
    m.double(6, s.get("multipleOf"));
    m.double(7, s.get("maximum"));
    m.boolean(8, s.get("exclusiveMaximum"));
    m.double(9, s.get("minimum"));
    m.boolean(10, s.get("exclusiveMinimum"));
    m.int64(11, s.get("maxLength"));
    m.int64(12, s.get("minLength"));
    m.str_of(13, s.get("pattern"));
    m.int64(14, s.get("maxItems"));
    m.int64(15, s.get("minItems"));
    m.boolean(16, s.get("uniqueItems"));
    m.int64(17, s.get("maxProperties"));
    m.int64(18, s.get("minProperties"));
    m.strings(19, s.get("required"));
    for e in s.get("enum").and_then(Value::as_array).into_iter().flatten() {
        m.any(20, e);
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.boolean(2, Some(&Value::Bool(*b)));
            // `false` encodes as an empty oneof; gnostic reads it as absent.
            m.msg(21, a);
        }
        Some(v @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.msg(1, encode_schema(v));
            m.msg(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut t_msg = Msg::default();
            t_msg.string(1, t);
            m.msg(22, t_msg);
        }
        Some(v @ Value::Array(_)) => {
            let mut t_msg = Msg::default();
            t_msg.strings(1, Some(v));
            m.msg(22, t_msg);
        }
        _ => {}
    }
    match s.get("items") {
        Some(v @ Value::Object(_)) => {
            let mut i = Msg::default();
            i.msg(1, encode_schema(v));
            m.msg(23, i);
        }
        Some(Value::Array(list)) => {
            let mut i = Msg::default();
            for v in list {
                i.msg(1, encode_schema(v));
            }
            m.msg(23, i);
        }
        _ => {}
    }
    for a in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        m.msg(24, encode_schema(a));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, prop) in props {
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, encode_schema(prop));
            p.msg(1, named);
        }
        m.msg(25, p);
    }
    m.str_of(26, s.get("discriminator"));
    m.boolean(27, s.get("readOnly"));
    if let Some(e) = s.get("example") {
        m.any(30, e);
    }
    m.extensions(31, &s);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    // Just enough of gnostic's messages, derived with prost, to read back
    // what the hand encoder wrote.
    #[derive(Clone, PartialEq, Message)]
    struct Document {
        #[prost(string, tag = "1")]
        swagger: String,
        #[prost(message, optional, tag = "8")]
        paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        definitions: Option<Definitions>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Paths {
        #[prost(message, repeated, tag = "2")]
        path: Vec<NamedPathItem>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct NamedPathItem {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        value: Option<PathItem>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct PathItem {
        #[prost(message, optional, tag = "8")]
        patch: Option<Operation>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Operation {
        #[prost(string, tag = "5")]
        operation_id: String,
        #[prost(message, repeated, tag = "8")]
        parameters: Vec<ParametersItem>,
        #[prost(message, repeated, tag = "13")]
        vendor_extension: Vec<NamedAny>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        parameter: Option<Parameter>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Parameter {
        #[prost(message, optional, tag = "2")]
        non_body: Option<NonBody>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct NonBody {
        #[prost(message, optional, tag = "3")]
        query: Option<Query>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Query {
        #[prost(string, tag = "2")]
        r#in: String,
        #[prost(string, tag = "4")]
        name: String,
        #[prost(string, tag = "6")]
        r#type: String,
        #[prost(bool, tag = "20")]
        unique_items: bool,
    }
    #[derive(Clone, PartialEq, Message)]
    struct NamedAny {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Any>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Any {
        #[prost(string, tag = "2")]
        yaml: String,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Definitions {
        #[prost(message, repeated, tag = "1")]
        additional_properties: Vec<NamedSchema>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct NamedSchema {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Schema>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Schema {
        #[prost(string, tag = "1")]
        r#ref: String,
        #[prost(string, repeated, tag = "19")]
        required: Vec<String>,
        #[prost(message, optional, tag = "22")]
        r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "25")]
        properties: Option<Definitions>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        value: Vec<String>,
    }

    #[test]
    fn document_round_trips_through_gnostic_field_numbers() {
        let doc = json!({
            "swagger": "2.0",
            "paths": {"/api/v1/namespaces/{namespace}/pods/{name}": {"patch": {
                "operationId": "patchCoreV1NamespacedPod",
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}],
                "x-kubernetes-group-version-kind": {"group": "", "kind": "Pod", "version": "v1"}
            }}},
            "definitions": {"io.k8s.api.core.v1.Pod": {
                "type": "object", "required": ["spec"],
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec"}}
            }}
        });
        let bytes = encode_document(&doc);
        let back = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let path = &back.paths.unwrap().path[0];
        assert_eq!(path.name, "/api/v1/namespaces/{namespace}/pods/{name}");
        let op = path.value.clone().unwrap().patch.unwrap();
        assert_eq!(op.operation_id, "patchCoreV1NamespacedPod");
        let q = op.parameters[0]
            .parameter
            .clone()
            .unwrap()
            .non_body
            .unwrap()
            .query
            .unwrap();
        assert_eq!((q.name.as_str(), q.r#in.as_str(), q.r#type.as_str()), ("fieldValidation", "query", "string"));
        assert!(q.unique_items);
        let ext = &op.vendor_extension[0];
        assert_eq!(ext.name, "x-kubernetes-group-version-kind");
        let gvk: Value = serde_json::from_str(&ext.value.clone().unwrap().yaml).unwrap();
        assert_eq!(gvk["kind"], "Pod");
        let pod = &back.definitions.unwrap().additional_properties[0];
        assert_eq!(pod.name, "io.k8s.api.core.v1.Pod");
        let schema = pod.value.clone().unwrap();
        assert_eq!(schema.required, vec!["spec"]);
        assert_eq!(schema.r#type.unwrap().value, vec!["object"]);
        let spec = &schema.properties.unwrap().additional_properties[0];
        assert_eq!(spec.value.clone().unwrap().r#ref, "#/definitions/io.k8s.api.core.v1.PodSpec");
    }
}
