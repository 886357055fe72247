package media

import (
	"fmt"
	"io"
)

// WritePrometheus writes the repository's counters in the Prometheus text
// exposition format, for the node's /metrics endpoint.
func (s *Service) WritePrometheus(w io.Writer) error {
	_, err := fmt.Fprintf(w, `# HELP praxis_media_uploads_total Media uploads stored.
# TYPE praxis_media_uploads_total counter
praxis_media_uploads_total %d
# HELP praxis_media_uploaded_bytes_total Bytes of media uploads stored (before deduplication).
# TYPE praxis_media_uploaded_bytes_total counter
praxis_media_uploaded_bytes_total %d
# HELP praxis_media_policy_rejections_total Uploads refused by the file policy.
# TYPE praxis_media_policy_rejections_total counter
praxis_media_policy_rejections_total %d
# HELP praxis_media_retention_deleted_total Media IDs deleted by the retention job.
# TYPE praxis_media_retention_deleted_total counter
praxis_media_retention_deleted_total %d
`, s.uploads.Load(), s.uploadedBytes.Load(), s.policyRejections.Load(), s.deletedByRetention.Load())
	return err
}
