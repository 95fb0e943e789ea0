//! istioctl analyze parity: the networking cases of Istio's own analyzer tests, run through
//! `meshroute validate`.
//!
//! Source: github.com/istio/istio, commit 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c,
//! `pkg/config/analysis/analyzers/analyzers_test.go` (the `testGrid` entries whose analyzer is in
//! `virtualservice`, `destinationrule`, `gateway`, `serviceentry` or `sidecar`) and the input
//! files of `pkg/config/analysis/analyzers/testdata/` they name, copied unchanged into
//! `tests/fixtures/istio-analyzers/` (Apache License 2.0, Copyright Istio Authors).
//!
//! Each Istio case runs one analyzer; meshroute runs all of them, so its findings are narrowed to
//! the ones that analyzer can make (by code and, for IST0101, by the field the finding is about).
//! Every case must then produce exactly Istio's (code, resource) multiset — or be listed as a
//! known gap with the reason, and then it must still differ (a fixed gap fails the test until it
//! is removed from the list, so the list stays true).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

struct Case {
    name: &'static str,
    analyzer: &'static str,
    files: &'static [&'static str],
    /// Istio's test passes this MeshConfig; meshroute gets it as `--mesh-config`.
    mesh_config: Option<&'static str>,
    /// (code, "Kind ns/name" or "Kind name" for the default namespace), as Istio's test lists them.
    expected: &'static [(&'static str, &'static str)],
    /// Why meshroute does not match Istio here.
    gap: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "gatewayNoWorkload",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-no-workload.yaml"],
        mesh_config: None,
        expected: &[("IST0101", "Gateway httpbin-gateway")],
        gap: None,
    },
    Case {
        name: "gatewayBadPort",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-no-port.yaml"],
        mesh_config: None,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
        gap: None,
    },
    Case {
        name: "gatewayCorrectPort",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-correct-port.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "gatewayCustomIngressGateway",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-custom-ingressgateway.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "gatewayCustomIngressGatewayBadPort",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-custom-ingressgateway-badport.yaml"],
        mesh_config: None,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
        gap: None,
    },
    Case {
        name: "gatewayCustomIngressGatewayBadPortWithoutTarget",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-custom-ingressgateway-badport-notarget.yaml"],
        mesh_config: None,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
        gap: None,
    },
    Case {
        name: "gatewayCustomIngressGatewayTranslation",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-custom-ingressgateway-translation.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "gatewayServiceMatchPod",
        analyzer: "gateway.IngressGatewayPortAnalyzer",
        files: &["gateway-custom-ingressgateway-svcselector.yaml"],
        mesh_config: None,
        expected: &[("IST0162", "Gateway httpbin8002-gateway")],
        gap: None,
    },
    Case {
        name: "gatewaySecret",
        analyzer: "gateway.SecretAnalyzer",
        files: &["gateway-secrets.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0101", "Gateway defaultgateway-bogusCredentialName"),
            ("IST0101", "Gateway customgateway-wrongnamespace"),
            ("IST0101", "Gateway bogusgateway"),
        ],
        gap: None,
    },
    Case {
        name: "gatewaySecretValidations",
        analyzer: "gateway.SecretAnalyzer",
        files: &["gateway-secrets-validation.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0161", "Gateway defaultgateway-invalid-keys"),
            ("IST0161", "Gateway defaultgateway-missing-keys"),
            ("IST0161", "Gateway defaultgateway-invalid-cert"),
            ("IST0161", "Gateway defaultgateway-expired"),
        ],
        gap: None,
    },
    Case {
        name: "conflicting gateways detect",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["conflicting-gateways.yaml"],
        mesh_config: None,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
        gap: None,
    },
    Case {
        name: "gateways with different port are non-conflicting",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["gateway-different-port.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "conflicting gateways with multiple port declarations",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["conflicting-gateways-multiple-ports.yaml"],
        mesh_config: None,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
        gap: None,
    },
    Case {
        name: "conflicting gateways detect by sub selector",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["conflicting-gateways-subSelector.yaml"],
        mesh_config: None,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
        gap: None,
    },
    Case {
        name: "conflicting gateways detect: no port",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["conflicting-gateways-invalid-port.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "sidecarDefaultSelector",
        analyzer: "sidecar.SelectorAnalyzer",
        files: &["sidecar-default-selector.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0111", "Sidecar ns2/has-conflict-2"),
            ("IST0111", "Sidecar ns2/has-conflict-1"),
            ("IST0167", "Sidecar ns-ambient/namespace-scoped"),
            ("IST0167", "Sidecar ns-ambient/pod-scoped"),
        ],
        gap: None,
    },
    Case {
        name: "sidecarSelector",
        analyzer: "sidecar.SelectorAnalyzer",
        files: &["sidecar-selector.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0101", "Sidecar default/maps-to-nonexistent"),
            ("IST0101", "Sidecar other/maps-to-different-ns"),
            ("IST0110", "Sidecar default/dupe-1"),
            ("IST0110", "Sidecar default/dupe-2"),
            ("IST0110", "Sidecar default/overlap-1"),
            ("IST0110", "Sidecar default/overlap-2"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceConflictingMeshGatewayHosts",
        analyzer: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        files: &["virtualservice_conflictingmeshgatewayhosts.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0109", "VirtualService team3/ratings"),
            ("IST0109", "VirtualService team4/ratings"),
            ("IST0109", "VirtualService foo/ratings"),
            ("IST0109", "VirtualService bar/ratings"),
            ("IST0109", "VirtualService foo/productpage"),
            ("IST0109", "VirtualService foo/bogus-productpage"),
            ("IST0109", "VirtualService team2/ratings"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceConflictingMeshGatewayHostsWithExportTo",
        analyzer: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        files: &["virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0109", "VirtualService foo/productpage"),
            ("IST0109", "VirtualService bar/productpage"),
            ("IST0109", "VirtualService foo/productpage-c"),
            ("IST0109", "VirtualService bar/productpage-c"),
            ("IST0109", "VirtualService foo/productpage-d"),
            ("IST0109", "VirtualService bar/productpage-d"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceDestinationHosts",
        analyzer: "virtualservice.DestinationHostAnalyzer",
        files: &["virtualservice_destinationhosts.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bookinfo-other"),
            ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogusport"),
            ("IST0112", "VirtualService default/reviews-2port-missing"),
            ("IST0101", "VirtualService istio-system/cross-namespace-details"),
            ("IST0101", "VirtualService hello/hello-export-to-bogus"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceDestinationRules",
        analyzer: "virtualservice.DestinationRuleAnalyzer",
        files: &["virtualservice_destinationrules.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0101", "VirtualService default/reviews-bogussubset"),
            ("IST0101", "VirtualService default/reviews-mirror-bogussubset"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceGateways",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_gateways.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0101", "VirtualService httpbin-bogus"),
            ("IST0132", "VirtualService default/cross-test"),
            ("IST0132", "VirtualService httpbin-bogus"),
            ("IST0132", "VirtualService httpbin"),
        ],
        gap: None,
    },
    Case {
        name: "virtualServiceKubernetesGateways",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_kubernetes_gateways.yaml"],
        mesh_config: None,
        expected: &[("IST0132", "VirtualService default/my-vs-host-mismatch")],
        gap: None,
    },
    Case {
        name: "virtualServiceJWTClaimRoute",
        analyzer: "virtualservice.JWTClaimRouteAnalyzer",
        files: &["virtualservice_jwtclaimroute.yaml"],
        mesh_config: None,
        expected: &[("IST0149", "VirtualService foo")],
        gap: None,
    },
    Case {
        name: "virtualServiceInternalGatewayRef",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_internal_gateway_ref.yaml"],
        mesh_config: None,
        expected: &[("IST0165", "VirtualService httpbin")],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, simple at destinationlevel",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-destination.yaml"],
        mesh_config: None,
        expected: &[("IST0128", "DestinationRule db-tls")],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, mutual at destinationlevel",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-mutual-destination.yaml"],
        mesh_config: None,
        expected: &[("IST0128", "DestinationRule db-mtls")],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, simple at portlevel",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-port.yaml"],
        mesh_config: None,
        expected: &[("IST0129", "DestinationRule db-tls")],
        gap: None,
    },
    Case {
        name: "destinationrule with credentialname, simple at destinationlevel, no workloadSelector",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-destination-credentialname.yaml"],
        mesh_config: None,
        expected: &[("IST0128", "DestinationRule db-tls")],
        gap: None,
    },
    Case {
        name: "destinationrule with credentialname, simple at destinationlevel, workloadSelector",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-destination-credentialname-selector.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "destinationrule with credentialname, simple at portlevel, no workloadSelector",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-port-credentialname.yaml"],
        mesh_config: None,
        expected: &[("IST0129", "DestinationRule db-tls")],
        gap: None,
    },
    Case {
        name: "destinationrule with credentialname, simple at portlevel, workloadSelector",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-simple-port-credentialname-selector.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, mutual at portlevel",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-mutual-port.yaml"],
        mesh_config: None,
        expected: &[("IST0129", "DestinationRule db-mtls")],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, mutual at destinationlevel and simple at port level",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-compound-simple-mutual.yaml"],
        mesh_config: None,
        expected: &[("IST0128", "DestinationRule db-mtls"), ("IST0129", "DestinationRule db-mtls")],
        gap: None,
    },
    Case {
        name: "destinationrule with no cacert, simple at destinationlevel and mutual at port level",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-compound-mutual-simple.yaml"],
        mesh_config: None,
        expected: &[("IST0129", "DestinationRule db-mtls"), ("IST0128", "DestinationRule db-mtls")],
        gap: None,
    },
    Case {
        name: "destinationrule with both cacerts",
        analyzer: "destinationrule.CaCertificateAnalyzer",
        files: &["destinationrule-with-ca.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "host defined in virtualservice not found in the gateway",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_host_not_found_gateway.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0132", "VirtualService default/testing-service-02-test-01"),
            ("IST0132", "VirtualService default/testing-service-02-test-02"),
            ("IST0132", "VirtualService default/testing-service-02-test-03"),
            ("IST0132", "VirtualService default/testing-service-03-test-04"),
        ],
        gap: None,
    },
    Case {
        name: "host defined in virtualservice not found in the gateway(beta version)",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_host_not_found_gateway_beta.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0132", "VirtualService default/testing-service-02-test-01"),
            ("IST0132", "VirtualService default/testing-service-02-test-02"),
            ("IST0132", "VirtualService default/testing-service-02-test-03"),
            ("IST0132", "VirtualService default/testing-service-03-test-04"),
        ],
        gap: None,
    },
    Case {
        name: "host defined in virtualservice not found in the gateway with ns",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_host_not_found_gateway_with_ns_prefix.yaml"],
        mesh_config: None,
        expected: &[("IST0132", "VirtualService default/testing-service-01-test-01")],
        gap: None,
    },
    Case {
        name: "host defined in virtualservice not found in the gateway with ns(beta version)",
        analyzer: "virtualservice.GatewayAnalyzer",
        files: &["virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml"],
        mesh_config: None,
        expected: &[("IST0132", "VirtualService default/testing-service-01-test-01")],
        gap: None,
    },
    Case {
        name: "missing Addresses and Protocol in Service Entry",
        analyzer: "serviceentry.ProtocolAddressesAnalyzer",
        files: &["serviceentry-missing-addresses-protocol.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0134", "ServiceEntry default/service-entry-test-03"),
            ("IST0134", "ServiceEntry default/service-entry-test-04"),
            ("IST0134", "ServiceEntry default/service-entry-test-07"),
        ],
        gap: None,
    },
    Case {
        name: "missing Addresses and Protocol in Service Entry with ISTIO_META_DNS_AUTO_ALLOCATE enabled",
        analyzer: "serviceentry.ProtocolAddressesAnalyzer",
        files: &["serviceentry-missing-addresses-protocol.yaml"],
        mesh_config: Some("serviceentry-missing-addresses-protocol-mesh-cfg.yaml"),
        expected: &[],
        gap: None,
    },
    Case {
        name: "certificate duplication in Gateway",
        analyzer: "gateway.CertificateAnalyzer",
        files: &["gateway-duplicate-certificate.yaml"],
        mesh_config: None,
        expected: &[
            ("IST0138", "Gateway istio-system/gateway-01-test-01"),
            ("IST0138", "Gateway istio-system/gateway-02-test-01"),
            ("IST0138", "Gateway istio-system/gateway-01-test-02"),
            ("IST0138", "Gateway default/gateway-01-test-03"),
        ],
        gap: None,
    },
    Case {
        name: "Route Rule no effect on Ingress",
        analyzer: "virtualservice.DestinationHostAnalyzer",
        files: &["virtualservice_route_rule_no_effects_ingress.yaml"],
        mesh_config: None,
        expected: &[("IST0140", "VirtualService default/testing-service-01-test-01")],
        gap: None,
    },
    Case {
        name: "Analyze conflicting gateway with list type",
        analyzer: "gateway.ConflictingGatewayAnalyzer",
        files: &["analyze-list-type.yaml"],
        mesh_config: None,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway alpha-l"), ("IST0145", "Gateway beta-l")],
        gap: None,
    },
    Case {
        name: "ServiceEntry Addresses Required Lowercase Protocol",
        analyzer: "serviceentry.ProtocolAddressesAnalyzer",
        files: &["serviceentry-address-required-lowercase.yaml"],
        mesh_config: None,
        expected: &[("IST0134", "ServiceEntry address-missing-lowercase")],
        gap: None,
    },
    Case {
        name: "ServiceEntry Addresses Required Uppercase Protocol",
        analyzer: "serviceentry.ProtocolAddressesAnalyzer",
        files: &["serviceentry-address-required-uppercase.yaml"],
        mesh_config: None,
        expected: &[("IST0134", "ServiceEntry address-missing-uppercase")],
        gap: None,
    },
    Case {
        name: "ServiceEntry conflicting protocols on same host and port",
        analyzer: "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        files: &["serviceentry-conflicting-protocol.yaml"],
        mesh_config: None,
        expected: &[("IST0177", "ServiceEntry default/se-http"), ("IST0177", "ServiceEntry default/se-https")],
        gap: None,
    },
    Case {
        name: "ServiceEntry no conflict same protocol",
        analyzer: "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        files: &["serviceentry-no-conflict-protocol.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "ServiceEntry no conflict non-overlapping exportTo scopes",
        analyzer: "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        files: &["serviceentry-conflicting-exportto.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "DestinationRuleWithFakeHost",
        analyzer: "destinationrule.PodNotSelectedAnalyzer",
        files: &["destinationrule-with-fake-host.yaml"],
        mesh_config: None,
        expected: &[("IST0174", "DestinationRule default/fake-host")],
        gap: None,
    },
    Case {
        name: "DestinationRuleSubsetsNotSelectPods",
        analyzer: "destinationrule.PodNotSelectedAnalyzer",
        files: &["destinationrule-subsets-not-select-pods.yaml"],
        mesh_config: None,
        expected: &[("IST0173", "DestinationRule default/subsets-not-select-pods")],
        gap: None,
    },
    Case {
        name: "DestinationRuleSubsetsWithTopologyLabels",
        analyzer: "destinationrule.PodNotSelectedAnalyzer",
        files: &["destinationrule-subsets-with-topology-labels.yaml"],
        mesh_config: None,
        expected: &[],
        gap: None,
    },
    Case {
        name: "DestinationRuleEmptyTopologyLabels",
        analyzer: "destinationrule.PodNotSelectedAnalyzer",
        files: &["destinationrule-empty-topology-labels.yaml"],
        mesh_config: None,
        expected: &[("IST0173", "DestinationRule default/empty-topology-labels")],
        gap: None,
    },
    Case {
        name: "ServiceEntry Addresses Allocated",
        analyzer: "serviceentry.ProtocolAddressesAnalyzer",
        files: &["serviceentry-address-allocated.yaml"],
        mesh_config: Some("serviceentry-address-allocated-mesh-cfg.yaml"),
        expected: &[],
        gap: None,
    },
];

/// Can Istio's `analyzer` make this finding? IST0101 is shared by many analyzers, told apart by
/// the field it is about.
fn made_by(analyzer: &str, code: &str, path: &str) -> bool {
    let ist0101 = |pred: &dyn Fn(&str) -> bool| code == "IST0101" && pred(path);
    match analyzer {
        "gateway.IngressGatewayPortAnalyzer" => code == "IST0162" || ist0101(&|p| p == "spec.selector"),
        "gateway.SecretAnalyzer" => {
            code == "IST0161" || ist0101(&|p| p == "spec.selector" || p.ends_with("tls.credentialName"))
        }
        "gateway.ConflictingGatewayAnalyzer" => code == "IST0145",
        "gateway.CertificateAnalyzer" => code == "IST0138",
        "sidecar.SelectorAnalyzer" => {
            matches!(code, "IST0110" | "IST0111" | "IST0167") || ist0101(&|p| p.starts_with("spec.workloadSelector"))
        }
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer" => code == "IST0109",
        "virtualservice.DestinationHostAnalyzer" => {
            matches!(code, "IST0112" | "IST0140") || ist0101(&|p| p.ends_with(".host") || p.ends_with(".port.number"))
        }
        "virtualservice.DestinationRuleAnalyzer" => ist0101(&|p| p.ends_with(".subset")),
        "virtualservice.GatewayAnalyzer" => {
            matches!(code, "IST0132" | "IST0165") || ist0101(&|p| p.contains("gateways["))
        }
        "virtualservice.JWTClaimRouteAnalyzer" => code == "IST0149",
        "destinationrule.CaCertificateAnalyzer" => matches!(code, "IST0128" | "IST0129"),
        "serviceentry.ProtocolAddressesAnalyzer" => code == "IST0134",
        "serviceentry.ConflictingServiceEntryProtocolAnalyzer" => code == "IST0177",
        "destinationrule.PodNotSelectedAnalyzer" => matches!(code, "IST0173" | "IST0174"),
        _ => false,
    }
}

/// One finding of `meshroute validate`: `SEV: FILE:LINE: Kind ns/name: path: message (CODE)`.
fn parse(line: &str) -> Option<(String, String, String)> {
    let code = line.strip_suffix(')')?.rsplit_once(" (")?.1.to_string();
    if !code.starts_with("IST") {
        return None;
    }
    let mut parts = line.splitn(5, ": ");
    let (_sev, _file, resource) = (parts.next()?, parts.next()?, parts.next()?);
    let path = parts.next().filter(|p| p.starts_with("spec") || p.starts_with("metadata")).unwrap_or("");
    Some((code, resource.to_string(), path.to_string()))
}

/// Istio names a resource without namespace by its name alone; meshroute puts it in `default`.
fn normalise(resource: &str) -> String {
    match resource.split_once(' ') {
        Some((kind, name)) if !name.contains('/') => format!("{kind} default/{name}"),
        _ => resource.to_string(),
    }
}

fn findings(case: &Case) -> BTreeMap<(String, String), usize> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/istio-analyzers/");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshroute"));
    // Istio's harness adds its default ingress gateway Pod and Service to every case.
    cmd.arg("validate").arg("-f").arg(format!("{dir}_default-ingressgateway.yaml"));
    for f in case.files {
        cmd.arg("-f").arg(format!("{dir}{f}"));
    }
    if let Some(m) = case.mesh_config {
        cmd.arg("--mesh-config").arg(format!("{dir}{m}"));
    }
    let out = cmd.output().expect("run meshroute");
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "{}: meshroute exited {code:?}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((code, resource, path)) = parse(line) {
            if made_by(case.analyzer, &code, &path) {
                *got.entry((code, normalise(&resource))).or_insert(0) += 1;
            }
        }
    }
    got
}

#[test]
fn istio_analyzer_cases_match_or_are_known_gaps() {
    let mut failures = Vec::new();
    let (mut matched, mut gaps) = (0, 0);
    for case in CASES {
        let mut want = BTreeMap::new();
        for (code, r) in case.expected {
            *want.entry((code.to_string(), normalise(r))).or_insert(0) += 1;
        }
        let got = findings(case);
        let same = got == want;
        match (same, case.gap) {
            (true, None) => matched += 1,
            (false, Some(_)) => gaps += 1,
            (false, None) => failures.push(format!("{}: want {want:?}\n      got  {got:?}", case.name)),
            (true, Some(reason)) => {
                failures.push(format!("{}: listed as a gap ({reason}) but now matches; remove the gap", case.name))
            }
        }
    }
    eprintln!("istio analyzer conformance: {matched} cases match, {gaps} known gaps, of {}", CASES.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
