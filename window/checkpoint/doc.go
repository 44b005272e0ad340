// Package checkpoint stores a shard's state on disk as a sequence of opaque
// records, durably, so that a restart resumes where it stopped. It knows
// nothing of series or detectors: the shard encodes each record, this
// package frames, checksums and files them.
//
// # Use
//
// Writing: Create, Append each record, Commit. Commit makes the file the
// shard's checkpoint and removes the older ones; Abort (safe to defer, a
// no-op after Commit) removes an unfinished file. One Writer per shard at a
// time: Commit numbers and removes files on the assumption that nobody else
// writes that shard's checkpoints meanwhile.
//
// Restoring is all or nothing, per shard: Latest names the shard's newest
// checkpoint; Open it; feed each record from Next into the shard's state as
// it comes; only io.EOF means the whole checkpoint was read. On any other
// error — from Latest, Open or any Next — discard everything restored so far
// and start that shard cold (log the error and count it: its cause is
// errors.Is ErrCorrupt, ErrTruncated or ErrUnknownVersion, or a
// *ShardMismatchError). Records are streamed rather than read whole and
// validated first so that restoring costs no second copy of the state; the
// price is that this package cannot enforce the rule: a caller that keeps
// the records before an error restores a partial shard.
//
// # Format
//
// All integers big-endian. A file is
//
//	header:  "ANOMALYD-CKPT\n" ‖ uint16 version (1) ‖ uint32 shard ‖
//	         uint32 shard count ‖ int64 creation time (Unix ms) ‖
//	         uint32 CRC-32C of the 32 bytes before it
//	records: one frame per record, data = 0x01 ‖ record
//	trailer: one frame, data = 0x02 ‖ uint64 records ‖ uint64 record bytes
//
// and nothing after the trailer. A frame is sink/wire's, that of Prometheus's
// chunked remote-read responses: uvarint(len(data)) ‖ CRC-32C(data) ‖ data.
// The kind byte tells a record from the trailer, so that a file cut at a
// frame boundary lacks the trailer and reads as truncated, and an all-zero
// tail (empty frames with a valid checksum: what a crash can leave where
// data was never flushed) is not a valid frame. The trailer's counts catch
// frames missing in between. A record is at most MaxRecordSize bytes and a
// frame's length is checked against the bytes left in the file before its
// buffer is grown, so a damaged length cannot allocate more than the file
// holds.
//
// Names: a committed checkpoint is shard-SSS-of-NNN.QQQQQQQQQQ.ckpt, with
// QQQQQQQQQQ a sequence number one above the highest of that shard index
// (whatever its shard count), so that the newest checkpoint is the one with
// the highest number even if the clock steps back. An unfinished one is
// shard-SSS-of-NNN.<random>.tmp, a name Latest never takes.
//
// # Durability
//
// Commit writes the trailer, flushes, fsyncs the file, closes it, renames it
// to its final name, fsyncs the directory, then removes the older
// checkpoints and stale temporary files of the shard. A crash
//
//   - before the rename leaves a .tmp file that Latest ignores and the next
//     Commit removes: the previous checkpoint stands;
//   - after the rename, before the directory fsync, leaves either the .tmp
//     file or the new checkpoint, complete because its data were synced
//     before the rename: the previous checkpoint is still there;
//   - after the directory fsync, before the removals, leaves the old and new
//     checkpoints: Latest takes the new one, the next Commit removes the old.
//
// Once Commit returns without error, the new checkpoint survives a crash.
//
// Why in this order, as Prometheus's WAL checkpoints (a .tmp directory
// synced, then renamed, then older checkpoints deleted) and VictoriaMetrics's
// parts (written to a temporary place, synced, renamed into the partition,
// the directory synced) do: a rename is atomic, so a reader sees the old file
// or the new, never half of one; but the file system may persist the rename
// before the data (delayed allocation), leaving a short or zero-filled file
// under the final name after a crash, hence the file fsync first. The rename
// itself is a change of the directory that is durable only once the
// directory is synced, hence the directory fsync before removing anything:
// otherwise a crash could keep the removal of the old checkpoint and lose
// the rename of the new one, leaving none.
//
// Costs: a Writer holds a bufio.Writer of writeBufferSize bytes and one
// scratch buffer as large as the largest record; a Reader one buffer as
// large as the largest record; neither ever holds the file. Append copies
// the record into the buffer and issues a write(2) per writeBufferSize
// bytes; only Commit waits for the disk. How the shard produces its records
// without stalling ingestion (in batches between samples, from a snapshot)
// is the caller's business.
package checkpoint
