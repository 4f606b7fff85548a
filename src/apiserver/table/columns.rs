//! Column definitions per built-in kind, in kube-apiserver's order
//! (`pkg/printers/internalversion/printers.go`, Kubernetes 1.32). The server
//! always prints with `Wide: true`, so priority-1 columns are always present
//! and kubectl shows them only for `-o wide`.

use super::descriptions as d;
use crate::apiserver::registry::Column;

fn col(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        format: format.to_string(),
        description: description.to_string(),
        priority,
        json_path: None,
    }
}

fn name() -> Column {
    col("Name", "string", "name", d::META_NAME, 0)
}

fn age() -> Column {
    col("Age", "string", "", d::META_CREATION, 0)
}

fn s(name: &str, description: &str) -> Column {
    col(name, "string", "", description, 0)
}

fn int(name: &str, description: &str) -> Column {
    col(name, "integer", "", description, 0)
}

fn boolean(name: &str, description: &str) -> Column {
    col(name, "boolean", "", description, 0)
}

fn wide(name: &str, description: &str) -> Column {
    col(name, "string", "", description, 1)
}

const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";

/// The columns of the default table convertor (`rest.NewDefaultTableConvertor`),
/// used by kinds without a printer: roles, limit ranges, CRDs, …
pub fn default_columns() -> Vec<Column> {
    vec![name(), col("Created At", "date", "", d::META_CREATION, 0)]
}

/// The columns apiextensions gives a custom resource whose CRD declares no
/// additional printer columns.
pub fn custom_resource_columns() -> Vec<Column> {
    vec![name(), col("Age", "date", "", d::META_CREATION, 0)]
}

/// The printer columns of a built-in kind, or `None` when kube-apiserver uses
/// the default convertor for it.
pub fn columns_for(group: &str, kind: &str) -> Option<Vec<Column>> {
    let cols = match (group, kind) {
        ("", "Pod") => vec![
            name(),
            s("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            s("Status", "The aggregate status of the containers in this pod."),
            s("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age(),
            wide("IP", d::POD_IP),
            wide("Node", d::POD_NODE_NAME),
            wide("Nominated Node", d::POD_NOMINATED),
            wide("Readiness Gates", d::POD_READINESS_GATES),
        ],
        ("", "PodTemplate") => vec![
            name(),
            s("Containers", CONTAINERS),
            s("Images", IMAGES),
            s("Pod Labels", "The labels for the pod template."),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name(),
            s("Min Available", "The minimum number of pods that must be available."),
            s("Max Unavailable", "The maximum number of pods that may be unavailable."),
            int("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time."),
            age(),
        ],
        ("", "ReplicationController") => vec![
            name(),
            int("Desired", d::RC_SPEC_REPLICAS),
            int("Current", d::RC_STATUS_REPLICAS),
            int("Ready", d::RC_STATUS_READY),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::RC_SPEC_SELECTOR),
        ],
        ("apps", "ReplicaSet") => vec![
            name(),
            int("Desired", d::RS_SPEC_REPLICAS),
            int("Current", d::RS_STATUS_REPLICAS),
            int("Ready", d::RS_STATUS_READY),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::RS_SPEC_SELECTOR),
        ],
        ("apps", "DaemonSet") => vec![
            name(),
            int("Desired", d::DS_DESIRED),
            int("Current", d::DS_CURRENT),
            int("Ready", d::DS_READY),
            int("Up-to-date", d::DS_UPDATED),
            int("Available", d::DS_AVAILABLE),
            s("Node Selector", d::POD_NODE_SELECTOR),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::DS_SPEC_SELECTOR),
        ],
        ("batch", "Job") => vec![
            name(),
            s("Status", "Status of the job."),
            s("Completions", d::JOB_SUCCEEDED),
            s("Duration", "Time required to complete the job."),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::JOB_SELECTOR),
        ],
        ("batch", "CronJob") => vec![
            name(),
            s("Schedule", d::CJ_SCHEDULE),
            s("Timezone", d::CJ_TIMEZONE),
            boolean("Suspend", d::CJ_SUSPEND),
            int("Active", d::CJ_ACTIVE),
            s("Last Schedule", d::CJ_LAST_SCHEDULE),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::JOB_SELECTOR),
        ],
        ("", "Service") => vec![
            name(),
            s("Type", d::SVC_TYPE),
            s("Cluster-IP", d::SVC_CLUSTER_IP),
            s("External-IP", d::SVC_EXTERNAL_IPS),
            s("Port(s)", d::SVC_PORTS),
            age(),
            wide("Selector", d::SVC_SELECTOR),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            name(),
            s("Class", "The name of the IngressClass resource that should be used for additional configuration"),
            s("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
            s("Address", "Address is a list containing ingress points for the load-balancer"),
            s("Ports", "Ports of TLS configurations that open"),
            age(),
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            name(),
            s("Controller", "Controller that is responsible for handling this class"),
            s("Parameters", "A reference to a resource with additional parameters"),
            age(),
        ],
        ("apps", "StatefulSet") => vec![
            name(),
            s("Ready", "Number of the pod with ready state"),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
        ],
        ("", "Endpoints") => vec![name(), s("Endpoints", d::EP_SUBSETS), age()],
        ("", "Node") => vec![
            name(),
            s("Status", "The status of the node"),
            s("Roles", "The roles of the node"),
            age(),
            s("Version", d::NODE_KUBELET_VERSION),
            wide("Internal-IP", d::NODE_ADDRESSES),
            wide("External-IP", d::NODE_ADDRESSES),
            wide("OS-Image", d::NODE_OS_IMAGE),
            wide("Kernel-Version", d::NODE_KERNEL),
            wide("Container-Runtime", d::NODE_RUNTIME),
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            s("Last Seen", d::EV_LAST),
            s("Type", d::EV_TYPE),
            s("Reason", d::EV_REASON),
            s("Object", d::EV_OBJECT),
            wide("Subobject", d::EV_FIELD_PATH),
            wide("Source", d::EV_SOURCE),
            s("Message", d::EV_MESSAGE),
            wide("First Seen", d::EV_FIRST),
            wide("Count", d::EV_COUNT),
            col("Name", "string", "name", d::META_NAME, 1),
        ],
        ("", "Namespace") => vec![name(), s("Status", "The status of the namespace"), age()],
        ("", "ComponentStatus") => vec![
            name(),
            s("Status", "Status of the component conditions"),
            s("Message", "Message of the component conditions"),
            s("Error", "Error of the component conditions"),
        ],
        ("", "Secret") => vec![name(), s("Type", d::SECRET_TYPE), s("Data", d::SECRET_DATA), age()],
        ("", "ServiceAccount") => vec![name(), s("Secrets", d::SA_SECRETS), age()],
        ("", "PersistentVolume") => vec![
            name(),
            s("Capacity", d::PV_CAPACITY),
            s("Access Modes", d::PV_ACCESS),
            s("Reclaim Policy", d::PV_RECLAIM),
            s("Status", d::PV_PHASE),
            s("Claim", d::PV_CLAIM),
            s("StorageClass", "StorageClass of the pv"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
            s("Reason", d::PV_REASON),
            age(),
            wide("VolumeMode", d::PV_VOLUME_MODE),
        ],
        ("", "PersistentVolumeClaim") => vec![
            name(),
            s("Status", d::PVC_PHASE),
            s("Volume", d::PVC_VOLUME_NAME),
            s("Capacity", d::PVC_CAPACITY),
            s("Access Modes", d::PVC_ACCESS),
            s("StorageClass", "StorageClass of the pvc"),
            s("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
            age(),
            wide("VolumeMode", d::PVC_VOLUME_MODE),
        ],
        ("apps", "Deployment") => vec![
            name(),
            s("Ready", "Number of the pod with ready state"),
            s("Up-to-date", d::DEP_UPDATED),
            s("Available", d::DEP_AVAILABLE),
            age(),
            wide("Containers", CONTAINERS),
            wide("Images", IMAGES),
            wide("Selector", d::DEP_SELECTOR),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name(),
            s("Reference", d::HPA_REF),
            s("Targets", d::HPA_METRICS),
            s("MinPods", d::HPA_MIN),
            s("MaxPods", d::HPA_MAX),
            s("Replicas", d::HPA_CURRENT),
            age(),
        ],
        ("", "ConfigMap") => vec![name(), s("Data", d::CM_DATA), age()],
        ("networking.k8s.io", "NetworkPolicy") => vec![name(), s("Pod-Selector", d::NETPOL_POD_SELECTOR), age()],
        ("rbac.authorization.k8s.io", "RoleBinding") => vec![
            name(),
            s("Role", d::RB_ROLEREF),
            age(),
            wide("Users", "Users in the roleBinding"),
            wide("Groups", "Groups in the roleBinding"),
            wide("ServiceAccounts", "ServiceAccounts in the roleBinding"),
        ],
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => vec![
            name(),
            s("Role", d::CRB_ROLEREF),
            age(),
            wide("Users", "Users in the clusterRoleBinding"),
            wide("Groups", "Groups in the clusterRoleBinding"),
            wide("ServiceAccounts", "ServiceAccounts in the clusterRoleBinding"),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            name(),
            age(),
            s("SignerName", d::CSR_SIGNER),
            s("Requestor", d::CSR_REQUEST),
            s("RequestedDuration", d::CSR_EXPIRATION),
            s("Condition", d::CSR_CONDITIONS),
        ],
        ("coordination.k8s.io", "Lease") => vec![name(), s("Holder", d::LEASE_HOLDER), age()],
        ("storage.k8s.io", "StorageClass") => vec![
            name(),
            s("Provisioner", d::SC_PROVISIONER),
            s("ReclaimPolicy", d::SC_RECLAIM),
            s("VolumeBindingMode", d::SC_BINDING),
            s("AllowVolumeExpansion", d::SC_EXPANSION),
            age(),
        ],
        ("apps", "ControllerRevision") => vec![
            name(),
            s("Controller", "Controller of the object"),
            s("Revision", d::CR_REVISION),
            age(),
        ],
        ("", "ResourceQuota") => vec![
            name(),
            s("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
            s("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
            age(),
        ],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name(),
            int("Value", d::PC_VALUE),
            boolean("Global-Default", d::PC_GLOBAL),
            age(),
            s("PreemptionPolicy", d::PC_PREEMPTION),
        ],
        // Upstream cites ObjectMeta's (absent) "handler" doc: an empty description.
        ("node.k8s.io", "RuntimeClass") => vec![name(), s("Handler", ""), age()],
        ("storage.k8s.io", "VolumeAttachment") => vec![
            name(),
            col("Attacher", "string", "name", d::VA_ATTACHER, 0),
            s("PV", d::VA_PV),
            s("Node", d::VA_NODE),
            boolean("Attached", d::VA_ATTACHED),
            age(),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name(),
            s("AddressType", d::EPS_ADDRESS_TYPE),
            s("Ports", d::EPS_PORTS),
            s("Endpoints", d::EPS_ENDPOINTS),
            age(),
        ],
        ("storage.k8s.io", "CSINode") => vec![
            name(),
            int("Drivers", "Drivers indicates the number of CSI drivers registered on the node"),
            age(),
        ],
        ("storage.k8s.io", "CSIDriver") => vec![
            name(),
            boolean("AttachRequired", d::CSID_ATTACH),
            boolean("PodInfoOnMount", d::CSID_PODINFO),
            boolean("StorageCapacity", d::CSID_CAPACITY),
            s("TokenRequests", d::CSID_TOKENS),
            boolean("RequiresRepublish", d::CSID_REPUBLISH),
            s("Modes", d::CSID_MODES),
            age(),
        ],
        ("storage.k8s.io", "CSIStorageCapacity") => vec![
            name(),
            s("StorageClassName", d::CSC_CLASS),
            s("Capacity", d::CSC_CAPACITY),
        ],
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => vec![
            name(),
            int("Webhooks", "Webhooks indicates the number of webhooks registered in this configuration"),
            age(),
        ],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => vec![
            name(),
            int("Validations", "Validations indicates the number of validation rules defined in this configuration"),
            s("ParamKind", "ParamKind specifies the kind of resources used to parameterize this policy"),
            age(),
        ],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => vec![
            name(),
            s("PolicyName", "PolicyName indicates the policy definition which the policy binding binded to"),
            s("ParamRef", "ParamRef indicates the param resource which sets the configration param"),
            age(),
        ],
        // kube-aggregator's own convertor for APIServices.
        ("apiregistration.k8s.io", "APIService") => vec![
            name(),
            s("Service", "The reference to the service that hosts this API endpoint."),
            s("Available", "Whether this service is available."),
            age(),
        ],
        _ => return None,
    };
    Some(cols)
}
