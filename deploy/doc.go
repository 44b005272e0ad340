// Package deploy holds what a user copies to run anomalyd beside Prometheus;
// it has no Go code of its own, only the tests that keep the files honest.
//
//   - prometheus/prometheus.yml: a complete prometheus.yml whose remote_write
//     entry feeds anomalyd and whose "anomalyd" scrape job (honor_labels: true)
//     reads the output series back from anomalyd's /metrics.
//   - prometheus/anomalyd-alerts.yml: AnomalyDetected (an alarm, anomaly_score
//     ≥ 2, in the last 2 minutes; severity info), AnomalySustained (an alarm
//     whose change lasted: the expected value left the band it had before;
//     severity warning) and alerts on anomalyd's own health.
//   - prometheus/anomalyd-recording.yml: per-metric and per-job aggregates of
//     anomaly_score, named level:metric:operations.
//   - prometheus/*.test.yml: promtool unit tests of both rule files.
//   - grafana/anomalyd.json: a dashboard (a series with its expected value and
//     band, its score, the top anomalous series, anomalyd's health).
//   - systemd/anomalyd.service: a hardened unit (a dynamic user whose only
//     writable place is the state directory /var/lib/anomalyd, which is
//     --storage.path), with its /etc/default file and an anomalyd.yml.
//   - kubernetes/: a one-replica StatefulSet with a volume claim for
//     --storage.path and probes on /-/healthy and /-/ready, its Service and
//     ConfigMap, and a kustomization.yaml that names the image.
//   - vmagent/: scale-out, vmagent sharding series by job and instance over
//     several anomalyd instances that warm moved series from Prometheus: its
//     flags, the prometheus.yml part and the instances' anomalyd.yml.
//
// The tests run promtool (Debian package prometheus) on every file and check
// that the dashboard only queries series anomalyd documents. They fail, and do
// not skip, when promtool is missing. They decode the Kubernetes manifests
// strictly into structs of the fields they use and check the wiring (the
// storage path is a volume claim's mount, the configuration file a ConfigMap
// key that loads, probes and Service on the listen port, a grace period and a
// stop timeout longer than --shutdown.timeout, memory for window.max_series),
// check every flag of the unit and the manifests against `anomalyd -h`, and
// run a built anomalyd with the shipped arguments (probes, SIGHUP, SIGTERM).
// systemd-analyze verify and security run on the unit when systemd-analyze is
// installed; without it the rest still runs. TestVmagentRecipe checks that
// vmagent shards by the labels anomalyd groups incidents by and that the
// three files of vmagent/ name the same addresses. The end-to-end tests in cmd/anomalyd/e2e
// run prometheus.yml and the rule files as shipped against a real Prometheus,
// and vmagent/'s flags and anomalyd.yml with a real vmagent.
//
// Trade-offs: the alerts use the combined detector only (per-detector series
// exist only with output.per_detector and would alert several times for one
// anomaly). Most alarms are one-sample blips, which NAB counts as anomalies and
// an operator calls noise: AnomalyDetected reports every alarm (info), and
// AnomalySustained only those whose change lasted 30 s, at the cost of that
// delay and of faults that do not move the expected value out of its old
// band, such as a service's faults on RED metrics: the combined band
// alternates between detectors and its 5-minute extreme is the widest one.
// docs/accuracy.md has the measured rates (make bench-faults).
// The dashboard's first row
// needs the input series and the output series in the same store.
package deploy
