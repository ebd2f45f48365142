#pragma once

// The daemon's counters and their Prometheus text rendering (DESIGN.md section 6). Touched only
// from the event loop's thread.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace dinamo::daemon {

// Verdict latency: from the message leaving the socket to its verdict being published.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 12> kBounds = {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                                                     1e-3, 2.5e-3, 5e-3, 1e-2, 0.1,    1.0};
  void Observe(double seconds);
  void Render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::array<std::uint64_t, kBounds.size()> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0.0;
};

struct Metrics {
  std::uint64_t histograms_received = 0;
  std::map<std::string, std::uint64_t, std::less<>> rejected;  // by reason
  std::uint64_t verdicts_published = 0;
  std::uint64_t alarms_raised = 0;
  std::uint64_t alarms_cleared = 0;
  std::uint64_t templates_reset = 0;
  std::uint64_t heartbeats_published = 0;
  std::uint64_t snapshots_written = 0;
  std::uint64_t snapshot_failures = 0;
  std::uint64_t config_reloads = 0;
  std::uint64_t config_refusals = 0;
  std::uint64_t control_requests = 0;
  std::uint64_t control_refusals = 0;  // CurveZMQ clients not allowed
  // Messages taken off the input socket in its latest non-empty drain (at most one batch).
  std::uint64_t input_backlog = 0;
  std::uint64_t input_backlog_max = 0;
  LatencyHistogram verdict_latency;

  std::uint64_t RejectedTotal() const;
  void Reject(std::string_view reason);
};

// Gauges known only to the daemon at rendering time.
struct MetricsGauges {
  std::uint64_t templates = 0;
  std::uint32_t alarms_active = 0;
  double uptime_s = 0.0;
  std::uint64_t last_sequence = 0;
};

std::string RenderPrometheus(const Metrics& m, const MetricsGauges& g);

}  // namespace dinamo::daemon
