#include "metrics.h"

#include <fmt/format.h>

namespace dinamo::daemon {
namespace {

void Counter(std::string& out, std::string_view name, std::string_view help, std::uint64_t v) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help,
                 name, name, v);
}

template <typename T>
void Gauge(std::string& out, std::string_view name, std::string_view help, T v) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help,
                 name, name, v);
}

}  // namespace

void LatencyHistogram::Observe(double seconds) {
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets_[i];
    }
  }
  ++count_;
  sum_ += seconds;
}

void LatencyHistogram::Render(std::string& out, std::string_view name,
                              std::string_view help) const {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i],
                   buckets_[i]);
  }
  fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n",
                 name, count_, name, sum_, name, count_);
}

std::uint64_t Metrics::RejectedTotal() const {
  std::uint64_t total = 0;
  for (const auto& [reason, n] : rejected) {
    total += n;
  }
  return total;
}

void Metrics::Reject(std::string_view reason) {
  auto it = rejected.find(reason);
  if (it == rejected.end()) {
    it = rejected.emplace(std::string(reason), 0).first;
  }
  ++it->second;
}

std::string RenderPrometheus(const Metrics& m, const MetricsGauges& g) {
  std::string out;
  out.reserve(4096);
  Counter(out, "dinamo_histograms_received_total", "Histogram messages taken from the bus",
          m.histograms_received);
  out +=
      "# HELP dinamo_rejected_messages_total Messages refused, by reason\n"
      "# TYPE dinamo_rejected_messages_total counter\n";
  for (const auto& [reason, n] : m.rejected) {
    fmt::format_to(std::back_inserter(out), "dinamo_rejected_messages_total{{reason=\"{}\"}} {}\n",
                   reason, n);
  }
  Counter(out, "dinamo_verdicts_published_total", "Verdicts published", m.verdicts_published);
  Counter(out, "dinamo_alarms_raised_total", "Alarms raised", m.alarms_raised);
  Counter(out, "dinamo_alarms_cleared_total", "Alarms cleared", m.alarms_cleared);
  Counter(out, "dinamo_template_resets_total", "Templates reset by a change of binning",
          m.templates_reset);
  Counter(out, "dinamo_heartbeats_published_total", "Heartbeats published", m.heartbeats_published);
  Counter(out, "dinamo_snapshots_written_total", "Snapshots written", m.snapshots_written);
  Counter(out, "dinamo_snapshot_failures_total", "Snapshots that could not be written",
          m.snapshot_failures);
  Counter(out, "dinamo_config_reloads_total", "Configurations reloaded", m.config_reloads);
  Counter(out, "dinamo_config_refusals_total", "Configurations refused on reload",
          m.config_refusals);
  Counter(out, "dinamo_control_requests_total", "Control commands answered", m.control_requests);
  Counter(out, "dinamo_control_clients_refused_total",
          "CurveZMQ clients refused by the ZAP handler", m.control_refusals);
  Gauge(out, "dinamo_templates", "Templates held", g.templates);
  Gauge(out, "dinamo_alarms_active", "Histograms in an active alarm", g.alarms_active);
  Gauge(out, "dinamo_input_queue_depth",
        "Messages taken off the input socket in its latest non-empty drain (a lower bound of "
        "the queue depth; a full batch is 256)",
        m.input_backlog);
  Gauge(out, "dinamo_input_queue_depth_max", "Largest dinamo_input_queue_depth seen",
        m.input_backlog_max);
  Gauge(out, "dinamo_uptime_seconds", "Seconds since start", g.uptime_s);
  Gauge(out, "dinamo_last_sequence", "Sequence number of the last published message",
        g.last_sequence);
  m.verdict_latency.Render(out, "dinamo_verdict_latency_seconds",
                           "From taking a histogram off the socket to publishing its verdict");
  return out;
}

}  // namespace dinamo::daemon
