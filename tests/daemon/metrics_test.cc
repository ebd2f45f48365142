#include "metrics.h"

#include <string>

#include <gtest/gtest.h>

namespace dinamo::daemon {
namespace {

TEST(Metrics, PrometheusTextHasTheContractNames) {
  Metrics m;
  m.histograms_received = 7;
  m.verdicts_published = 5;
  m.alarms_raised = 2;
  m.Reject("nan_count");
  m.Reject("nan_count");
  m.Reject("oversized");
  MetricsGauges g;
  g.templates = 3;
  const std::string text = RenderPrometheus(m, g);
  EXPECT_NE(text.find("\ndinamo_histograms_received_total 7\n"), std::string::npos);
  EXPECT_NE(text.find("\ndinamo_rejected_messages_total{reason=\"nan_count\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("\ndinamo_rejected_messages_total{reason=\"oversized\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("\ndinamo_verdicts_published_total 5\n"), std::string::npos);
  EXPECT_NE(text.find("\ndinamo_alarms_raised_total 2\n"), std::string::npos);
  EXPECT_NE(text.find("\ndinamo_templates 3\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE dinamo_rejected_messages_total counter\n"), std::string::npos);
  EXPECT_EQ(m.RejectedTotal(), 3u);
}

TEST(Metrics, LatencyBucketsAreCumulative) {
  Metrics m;
  m.verdict_latency.Observe(3e-5);
  m.verdict_latency.Observe(2e-3);
  m.verdict_latency.Observe(5.0);
  const std::string text = RenderPrometheus(m, MetricsGauges{});
  EXPECT_NE(text.find("dinamo_verdict_latency_seconds_bucket{le=\"5e-05\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("dinamo_verdict_latency_seconds_bucket{le=\"0.0025\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("dinamo_verdict_latency_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("dinamo_verdict_latency_seconds_count 3\n"), std::string::npos);
}

}  // namespace
}  // namespace dinamo::daemon
