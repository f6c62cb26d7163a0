//! Deployment artifacts: the Istio / Flagger / Argo Rollouts manifests under `istio/`, the OCI
//! image `make image` builds, and `envoy/docker-compose.yaml`. One test binary
//! (`cargo test -p sticky-canary-harness --test deploy`), one module per concern:
//!
//! - `manifests`: every YAML document under `istio/`, found by kind and name (used by the rest);
//! - `crds`: every manifest validates against its CRD's OpenAPI schema (`schema.rs`), from
//!   `${CRD_DIR:-../shared/crds}`; without that folder this test (only this one) says it skipped;
//! - `carriers`: the filter configuration every manifest carries (WasmPlugin, TrafficExtension,
//!   the Wasm and the native build's EnvoyFilters) compiles and decides alike;
//! - `in_envoy`: each of them starts in a real Envoy with the built module and routes sessions,
//!   overrides and pins; the EnvoyFilter patch passes `envoy --mode validate` as shipped and with
//!   the local module;
//! - `native`: the native build's manifests (`istio/native/`): the dynamic-module EnvoyFilters
//!   carry the WasmPlugins' documents, pass `envoy --mode validate` with the built module and
//!   route sessions in a real Envoy; the workloads mount the module where Envoy looks, set the
//!   stat-prefix runtime flag and let the native stats through, so that Envoy, configured as
//!   Istio renders them, publishes the Wasm build's series;
//! - `agreement`: routing, rollout and mesh manifests agree with the plugin configuration;
//! - `brake`: the pooled brake (`guard.pool`) as shipped: Istio's outbound cluster for Prometheus
//!   and the EnvoyFilter that keeps it on the gateways, the rendered filter querying it from a
//!   real Envoy, `envoy/pool.yaml` against `envoy/envoy.yaml`, `envoy --mode validate` on every
//!   shipped Envoy config, Flagger's rollback webhook (promtool);
//! - `pipeline`: the Argo Rollout's staged pipeline (stage zero, test merchants, 5/25/50 % bucket
//!   cohorts, promotion, abort) rendered as Argo and Istio would, step by step in a real Envoy
//!   (LDS reloads), with returning sessions, with and without the idle hold;
//! - `analysis`: the PromQL of the Flagger MetricTemplates and Argo AnalysisTemplates parses
//!   (promtool), reads only metrics the filter (or Envoy/Istio) publishes, and judges known traffic
//!   like the `sticky-canary gate` rule (promtool unit tests);
//! - `compose`: `docker-compose config` accepts the compose file, which runs the tested envoy.yaml
//!   (and, in its `native` profile, native.yaml) unchanged in the tested Envoy version;
//! - `image`: the OCI layout of `make image` holds exactly `plugin.wasm`, byte-identical to the
//!   build.

mod agreement;
mod analysis;
mod brake;
mod carriers;
mod compose;
mod crds;
mod image;
mod in_envoy;
mod manifests;
mod native;
mod pipeline;
