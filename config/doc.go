// Package config holds anomalyd's YAML configuration: the structs, their
// defaults, strict parsing and validation. testdata/full.good.yml is the
// reference: every key, commented.
//
// # Loading
//
// Load and LoadFile return a Config that is complete and valid: every
// default is filled in, every rule selector parsed into Rule.Matchers, every
// remote_write entry named. Default is the configuration used without a file.
// A loaded Config is not modified afterwards and may be shared between
// goroutines; a reload builds a new one.
//
// Defaults apply key by key: a block that sets one key keeps the defaults of
// the others (queue_config inside a remote_write entry too). A key given with
// an empty value (`ingest:` with nothing under it, everything commented out)
// is the same as a key left out — with one consequence worth knowing: the
// built-in rule list (one rule ignoring classic histogram buckets) is
// replaced by a `rules:` list in the file, so `rules: []` analyses buckets
// too, while an empty `rules:` keeps the built-in rule.
//
// # Rule detectors inherit
//
// A rule's `detectors:` block lists only what differs from the top-level
// `detectors:` block; every key it leaves out is inherited, wherever the
// top-level block appears in the file. A rule's `incidents:` block does
// the same with the one incidents key that is per series, group_by.
// Validation runs on the merged settings, so a rule is valid or not in the
// context of the file it is in; the top-level blocks are validated first,
// so an inherited error is reported at the key that holds it.
//
// To do this, decoding has two steps. yaml.v2 gives each UnmarshalYAML a
// function that decodes the YAML node under it; Config.UnmarshalYAML keeps
// those functions for the top-level blocks, list entries and rule blocks
// (the lazy type), then calls them in dependency order: ingest, window,
// detectors, rules (each rule's overrides onto a copy of the top-level
// detectors), output, remote_write, warmup, history, incidents, and each
// rule's incidents block onto a copy of the top-level group_by. Because the functions belong to the
// original decoder, strictness and line numbers survive: a misspelt key in a
// rule's detectors block is reported on its own line. The alternative,
// keeping a rule's block as a yaml.MapSlice and re-encoding it, loses them.
//
// # Errors
//
// Parsing is strict (yaml.UnmarshalStrict): an unknown or repeated key is an
// error naming its line, e.g.
//
//	yaml: unmarshal errors:
//	  line 12: field alpah not found in type detectors.EWMAParams
//
// Type errors from the whole file are reported together, in line order.
// Validation errors name the key path, list entries by index:
//
//	window.max_series must be positive, got 0
//	rules[1].detectors: ewma.alpha must be in (0, 1), got 1.5
//	remote_write[0]: unsupported url scheme "ftp"
//
// A malformed duration cannot name its line (model.Duration reports it without
// one), so it names the block instead: `ingest: unknown unit "x" in duration
// "5x"`. LoadFile prefixes every error with `parsing YAML file F: `, as
// Prometheus does. Each message is pinned by a testdata/*.bad.yml case.
//
// # Selectors
//
// Rule.Match and Exclude are Prometheus series selectors, parsed by
// ParseSelector with PromQL's own parser (promql/parser), so that they mean
// what they mean in a query and fail with promtool's messages. Regular
// expressions are anchored, as in PromQL. Unlike a PromQL query, a selector
// whose only matcher matches the empty string is allowed: a rule may apply to
// every series.
//
// # Secrets and files
//
// Config.String prints the effective configuration as YAML that Load accepts,
// with every secret of Prometheus's HTTP client config (passwords,
// credentials, client secrets, proxy CONNECT headers) shown as <secret> by
// its Secret type (so two configs differing only in a secret print the
// same). Credentials in the url are rejected: the url is logged. LoadFile
// resolves the relative file names of the client keys (HTTPClientConfig)
// against the config file's directory; the files are read by the clients
// NewClient builds, again when they change, not here.
package config
