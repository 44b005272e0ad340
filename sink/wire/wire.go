// Package wire holds the facts of Prometheus's remote protocols that both
// sides of anomalyd need, once: the protobuf message names, content types and
// headers of remote write 1.0 and 2.0 and of remote read, and the frame
// format of STREAMED_XOR_CHUNKS read responses (frame.go), reader and writer
// side by side.
//
// ingest receives remote write and sends remote read (warm-up); sink sends
// remote write and serves remote read; config names the protobuf messages.
// Each of them importing one copy means a spelling or a checksum cannot drift
// between the two directions of one protocol. wire imports nothing from
// anomalyd, so every package may import it.
//
// Specs: remote_write_spec.md and remote_write_spec_2_0.md
// (https://prometheus.io/docs/specs/prw/), and Prometheus's
// storage/remote/codec.go and chunked.go for remote read.
package wire

// Protobuf messages, spelt as in the proto= parameter of Content-Type and in
// remote_write.protobuf_message.
const (
	MessageWriteV1 = "prometheus.WriteRequest"        // remote write 1.0
	MessageWriteV2 = "io.prometheus.write.v2.Request" // remote write 2.0
	// MessageReadRequest is the request of remote read.
	MessageReadRequest = "prometheus.ReadRequest"
	// MessageChunkedReadResponse is one frame of a STREAMED_XOR_CHUNKS
	// remote-read response.
	MessageChunkedReadResponse = "prometheus.ChunkedReadResponse"
)

// Content types. Remote write 1.0 and remote read (requests and SAMPLES
// responses) send ContentTypeProtobuf without parameters; remote write 2.0
// names its message in proto=.
const (
	ContentTypeProtobuf = "application/x-protobuf"
	ContentTypeWriteV2  = ContentTypeProtobuf + ";proto=" + MessageWriteV2
	// ContentTypeStreamed is the media type of a STREAMED_XOR_CHUNKS
	// response, without its proto= parameter.
	ContentTypeStreamed = "application/x-streamed-protobuf"
	// ContentTypeChunkedRead is the whole Content-Type of a
	// STREAMED_XOR_CHUNKS response, as Prometheus sends it.
	ContentTypeChunkedRead = ContentTypeStreamed + "; proto=" + MessageChunkedReadResponse
)

// EncodingSnappy is the Content-Encoding of every remote-write and
// remote-read body (the snappy block format, not the framed one), and the
// Accept-Encoding of remote-read requests.
const EncodingSnappy = "snappy"

// Remote-write headers and the versions they carry.
const (
	HeaderWriteVersion = "X-Prometheus-Remote-Write-Version"
	WriteVersion1      = "0.1.0"
	WriteVersion2      = "2.0.0"
	// A 2.0 receiver answers with the counts it wrote; a 2xx without
	// HeaderSamplesWritten comes from a receiver that read the body as 1.0.
	HeaderSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	HeaderHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	HeaderExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
	// HeaderRetryAttempt numbers the retries of one request (1, 2, …).
	HeaderRetryAttempt = "Retry-Attempt"
)

// Remote-read headers.
const (
	HeaderReadVersion = "X-Prometheus-Remote-Read-Version"
	ReadVersion       = "0.1.0"
)
