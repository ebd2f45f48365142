// The real dinamod on loopback, driven as the readout and a console would drive it.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bus_client.h"
#include "dinamo/run_table.h"
#include <sys/un.h>

namespace dinamo::testing {
namespace {

// Datasets number runs from 0; on the bus runs start at 1.
constexpr std::uint64_t kRunOffset = 1;

const RunTable& Toy() {
  static const RunTable table = ReadRunTable(std::string(DINAMO_TEST_DATA) + "/toy_0.csv");
  return table;
}

const std::map<std::uint64_t, double>& Golden() {
  static const std::map<std::uint64_t, double> chi2 = [] {
    std::map<std::uint64_t, double> out;
    std::ifstream in(std::string(DINAMO_TEST_DATA) + "/s_alpha0.5_0.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto comma = line.find(',');
      out[std::stoull(line.substr(0, comma)) + kRunOffset] = std::stod(line.substr(comma + 1));
    }
    return out;
  }();
  return chi2;
}

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

// Publishes toy runs [first, last) (dataset indices) under `name` with their labels.
void Stream(Bus& bus, const std::string& name, std::size_t first, std::size_t last) {
  for (std::size_t i = first; i < last; ++i) {
    const RunRecord& r = Toy().runs[i];
    bus.Send(Bus::Make(name, static_cast<std::uint64_t>(r.run) + kRunOffset, r.counts,
                       r.label == Label::kGood ? v1::LABEL_GOOD : v1::LABEL_BAD));
  }
}

// The largest relative chi2 error against the reference; infinite when a run is missing.
double WorstError(const std::map<std::uint64_t, v1::Verdict>& got, std::uint64_t first,
                  std::uint64_t last) {
  double worst = 0.0;
  for (std::uint64_t run = first; run <= last; ++run) {
    const auto it = got.find(run);
    if (it == got.end()) {
      return INFINITY;
    }
    const double want = Golden().at(run);
    worst = std::max(worst, std::abs(it->second.chi2() - want) / std::abs(want));
  }
  return worst;
}

class DinamodTest : public ::testing::Test {
 protected:
  void StartWith(double threshold) {
    daemon_.WriteConfig(daemon_.ConfigText(threshold));
    daemon_.Start();
    bus_ = std::make_unique<Bus>(daemon_);
    ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  }

  void Restart() {
    ASSERT_EQ(daemon_.Stop(), 0) << daemon_.Log();
    bus_.reset();
    daemon_.Start();
    bus_ = std::make_unique<Bus>(daemon_);
    ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  }

  std::string Metrics() { return HttpGet(daemon_.http(), "/metrics"); }

  DaemonProcess daemon_{TestName()};
  std::unique_ptr<Bus> bus_;
};

TEST_F(DinamodTest, VerdictsOverTheBusMatchTheReference) {
  StartWith(1.0);
  Stream(*bus_, "VELO/ClusterSize", 0, 300);
  const auto got = bus_->Collect("VELO/ClusterSize", 1, 300);
  EXPECT_EQ(got.size(), 300u);
  EXPECT_LE(WorstError(got, 1, 300), 1e-9);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, PublishedMessagesCarryIncreasingSequenceNumbers) {
  StartWith(1.0);
  Stream(*bus_, "A/h", 0, 50);
  const auto got = bus_->Collect("A/h", 1, 50);
  ASSERT_EQ(got.size(), 50u);
  std::uint64_t previous = 0;
  for (const auto& [run, v] : got) {
    EXPECT_GT(v.sequence(), previous) << "run " << run;
    previous = v.sequence();
  }
}

TEST_F(DinamodTest, SighupChangesTheThreshold) {
  StartWith(1.0);
  Stream(*bus_, "RICH/Hits", 0, 50);
  for (const auto& [run, v] : bus_->Collect("RICH/Hits", 1, 50)) {
    EXPECT_EQ(v.threshold(), 1.0) << "run " << run;
  }
  daemon_.WriteConfig(daemon_.ConfigText(2.5));
  daemon_.Signal(SIGHUP);
  std::this_thread::sleep_for(500ms);
  Stream(*bus_, "RICH/Hits", 50, 100);
  const auto after = bus_->Collect("RICH/Hits", 51, 100);
  EXPECT_EQ(after.size(), 50u);
  for (const auto& [run, v] : after) {
    EXPECT_EQ(v.threshold(), 2.5) << "run " << run;
  }
  EXPECT_LE(WorstError(after, 51, 100), 1e-9);  // the template survived the reload
  EXPECT_EQ(MetricValue(Metrics(), "dinamo_config_reloads_total"), 1.0);
}

TEST_F(DinamodTest, SighupMovesTheInputToANewEndpoint) {
  StartWith(1.0);
  Stream(*bus_, "RICH/Hits", 0, 20);
  ASSERT_EQ(bus_->Collect("RICH/Hits", 1, 20).size(), 20u);
  bus_.reset();
  daemon_.set_readout(FreePort());
  daemon_.WriteConfig(daemon_.ConfigText(1.0));
  daemon_.Signal(SIGHUP);
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  Stream(*bus_, "RICH/Hits", 20, 40);
  const auto got = bus_->Collect("RICH/Hits", 21, 40);
  EXPECT_LE(WorstError(got, 21, 40), 1e-9);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, BrokenConfigOnSighupIsRefusedAndTheDaemonGoesOn) {
  StartWith(2.5);
  daemon_.WriteConfig(daemon_.ConfigText(4.0));
  daemon_.AppendConfig("defaults: [this is: not valid\n");
  daemon_.Signal(SIGHUP);
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(daemon_.Alive());
  Stream(*bus_, "RICH/Hits", 0, 30);
  const auto got = bus_->Collect("RICH/Hits", 1, 30);
  EXPECT_EQ(got.size(), 30u);
  for (const auto& [run, v] : got) {
    EXPECT_EQ(v.threshold(), 2.5) << "run " << run;
  }
  EXPECT_EQ(MetricValue(Metrics(), "dinamo_config_refusals_total"), 1.0);
  EXPECT_NE(daemon_.Log().find("config refused"), std::string::npos);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, SigtermThenRestartContinuesExactly) {
  StartWith(1.0);
  Stream(*bus_, "ECAL/Energy", 0, 150);
  const auto first = bus_->Collect("ECAL/Energy", 1, 150);
  Restart();
  Stream(*bus_, "ECAL/Energy", 150, 300);
  const auto second = bus_->Collect("ECAL/Energy", 151, 300);
  EXPECT_LE(WorstError(first, 1, 150), 1e-9);
  EXPECT_LE(WorstError(second, 151, 300), 1e-9);
  EXPECT_GT(second.begin()->second.sequence(), first.rbegin()->second.sequence());
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, CorruptSnapshotIsRefusedAndThePreviousOneUsed) {
  StartWith(1.0);
  Stream(*bus_, "HCAL/Energy", 0, 40);
  ASSERT_EQ(bus_->Collect("HCAL/Energy", 1, 40).size(), 40u);
  Restart();  // snapshot after run 40 becomes the previous generation at the next stop
  Stream(*bus_, "HCAL/Energy", 40, 80);
  ASSERT_EQ(bus_->Collect("HCAL/Energy", 41, 80).size(), 80u - 40u);
  ASSERT_EQ(daemon_.Stop(), 0);

  const auto current = daemon_.state_dir() / "snapshot.pb";
  std::fstream file(current, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(std::filesystem::file_size(current) / 2));
  file.put('\x5a');
  file.close();

  bus_.reset();
  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  EXPECT_NE(daemon_.Log().find("snapshot refused file=" + current.string()), std::string::npos);
  // The previous generation ends at run 40: runs 41 to 80 are scored again, exactly.
  Stream(*bus_, "HCAL/Energy", 40, 80);
  const auto again = bus_->Collect("HCAL/Energy", 41, 80);
  EXPECT_LE(WorstError(again, 41, 80), 1e-9);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, PeriodicSnapshotSurvivesAKill) {
  std::string config = daemon_.ConfigText(1.0);
  config.replace(config.find("snapshot_interval_s: 3600"), 25, "snapshot_interval_s: 1");
  daemon_.WriteConfig(config);
  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  Stream(*bus_, "TT/Hits", 0, 60);
  ASSERT_EQ(bus_->Collect("TT/Hits", 1, 60).size(), 60u);
  std::this_thread::sleep_for(1500ms);  // at least one interval snapshot after run 60
  daemon_.Kill();
  bus_.reset();

  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  Stream(*bus_, "TT/Hits", 60, 120);
  EXPECT_LE(WorstError(bus_->Collect("TT/Hits", 61, 120), 61, 120), 1e-9);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, EveryBadInputIsRefusedAndCountedWhileValidTrafficGoesOn) {
  StartWith(1.0);
  Stream(*bus_, "MUON/Hits", 0, 20);
  ASSERT_EQ(bus_->Collect("MUON/Hits", 1, 20).size(), 20u);

  const std::vector<double>& counts = Toy().runs[0].counts;
  auto encoded = [&](auto change) {
    v1::Histogram h = Bus::Make("MUON/Hits", 100000, counts);
    change(h);
    return h.SerializeAsString();
  };
  const std::map<std::string, std::vector<std::string>> bad = {
      {"malformed", {"MUON/Hits", "\x08\xff\xff\xff garbage"}},
      {"frame_count", {"MUON/Hits"}},
      {"empty_body", {"MUON/Hits", ""}},
      {"shape_mismatch", {"MUON/Hits", encoded([](auto& h) { h.mutable_axes(0)->set_bins(7); })}},
      {"nan_count", {"MUON/Hits", encoded([](auto& h) { h.set_counts(1, NAN); })}},
      {"infinite_count", {"MUON/Hits", encoded([](auto& h) { h.set_counts(1, INFINITY); })}},
      {"negative_count", {"MUON/Hits", encoded([](auto& h) { h.set_counts(1, -1.0); })}},
      {"empty_name", {"", encoded([](auto& h) { h.set_name(""); })}},
      {"topic_mismatch", {"MUON/Other", encoded([](auto&) {})}},
      {"run_unset", {"MUON/Hits", encoded([](auto& h) { h.set_run(0); })}},
      {"run_repeated", {"MUON/Hits", encoded([](auto& h) { h.set_run(20); })}},
      {"run_out_of_order", {"MUON/Hits", encoded([](auto& h) { h.set_run(5); })}},
      {"oversized", {"MUON/Hits", std::string((16u << 20) + 16, 'x')}},
  };
  for (const auto& [reason, frames] : bad) {
    bus_->SendRaw(frames);
  }
  Stream(*bus_, "MUON/Hits", 20, 50);
  EXPECT_EQ(bus_->Collect("MUON/Hits", 21, 50).size(), 30u);
  ASSERT_TRUE(daemon_.Alive());

  const std::string metrics = Metrics();
  for (const auto& [reason, frames] : bad) {
    EXPECT_EQ(MetricValue(metrics, "dinamo_rejected_messages_total{reason=\"" + reason + "\"}"),
              1.0)
        << reason;
  }
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, MessageOverTheTransportLimitIsCountedAndInputRecovers) {
  daemon_.WriteConfig(daemon_.ConfigText(1.0, "  max_message_bytes: 65536\n"));
  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  bus_->SendRaw({"MUON/Hits", std::string(1u << 20, 'x')});  // libzmq drops the connection
  std::this_thread::sleep_for(1s);
  Stream(*bus_, "MUON/Hits", 0, 20);
  EXPECT_EQ(bus_->Collect("MUON/Hits", 1, 20).size(), 20u);
  EXPECT_EQ(MetricValue(Metrics(), "dinamo_rejected_messages_total{reason=\"transport_dropped\"}"),
            1.0);
}

TEST_F(DinamodTest, ControlSocketAnswersStatusAndTemplate) {
  StartWith(1.0);
  Stream(*bus_, "A/h", 0, 10);
  ASSERT_EQ(bus_->Collect("A/h", 1, 10).size(), 10u);

  v1::Command status;
  status.mutable_status();
  const auto s = Call(daemon_, status);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->ok());
  EXPECT_GE(s->status().templates(), 2u);

  v1::Command get;
  get.mutable_get_template()->set_histogram("A/h");
  const auto t = Call(daemon_, get);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->ok()) << t->error();
  EXPECT_EQ(t->template_().mu_size(), 100);
  EXPECT_EQ(t->template_().sigma_size(), 100);
  EXPECT_EQ(t->template_().last_run(), 10u);
  EXPECT_EQ(t->template_().last_pulls_size(), 100);

  get.mutable_get_template()->set_histogram("nothing");
  EXPECT_FALSE(Call(daemon_, get)->ok());
  v1::Command label;
  label.mutable_set_label()->set_histogram("A/h");
  label.mutable_set_label()->set_run(3);
  const auto l = Call(daemon_, label);
  ASSERT_TRUE(l);
  EXPECT_FALSE(l->ok());
  EXPECT_NE(l->error().find("LABEL_GOOD"), std::string::npos) << l->error();
}

v1::Command LabelCommand(const std::string& name, std::uint64_t run, v1::Label label) {
  v1::Command c;
  c.set_user("shifter");
  c.set_host("console");
  c.set_comment("integration test");
  v1::SetLabel* l = c.mutable_set_label();
  l->set_histogram(name);
  l->set_run(run);
  l->set_label(label);
  return c;
}

std::optional<v1::TemplateView> TemplateOver(const DaemonProcess& d, const std::string& name) {
  v1::Command get;
  get.mutable_get_template()->set_histogram(name);
  const auto reply = Call(d, get);
  if (!reply || !reply->ok()) {
    return std::nullopt;
  }
  return reply->template_();
}

TEST_F(DinamodTest, LateLabelOverControlGivesTheSameTemplateAsOnTime) {
  StartWith(1.0);
  constexpr std::uint64_t kRuns = 40;
  const auto toy_label = [](std::uint64_t run) {
    return Toy().runs[run - 1].label == Label::kGood ? v1::LABEL_GOOD : v1::LABEL_BAD;
  };
  for (std::uint64_t run = 1; run <= kRuns; ++run) {
    const auto& counts = Toy().runs[run - 1].counts;
    bus_->Send(Bus::Make("On/h", run, counts));
    bus_->Send(Bus::Make("Late/h", run, counts));
    ASSERT_EQ(bus_->Collect("Late/h", run, run).size(), 1u) << "run " << run;
    const auto on_time = Call(daemon_, LabelCommand("On/h", run, toy_label(run)));
    ASSERT_TRUE(on_time && on_time->ok()) << "run " << run;
  }
  // Every label of Late/h arrives after all its runs, newest first.
  for (std::uint64_t run = kRuns; run >= 1; --run) {
    const auto late = Call(daemon_, LabelCommand("Late/h", run, toy_label(run)));
    ASSERT_TRUE(late && late->ok()) << "run " << run << ": " << (late ? late->error() : "");
    EXPECT_EQ(late->action().affected(), 1u);
  }
  const auto on = TemplateOver(daemon_, "On/h");
  const auto late = TemplateOver(daemon_, "Late/h");
  ASSERT_TRUE(on && late);
  EXPECT_GT(on->learned_runs(), 30u);
  EXPECT_EQ(on->learned_runs(), late->learned_runs());
  for (int b = 0; b < on->mu_size(); ++b) {
    EXPECT_EQ(on->mu(b), late->mu(b)) << "bin " << b;  // bit for bit
    EXPECT_EQ(on->sigma(b), late->sigma(b)) << "bin " << b;
  }
  const auto unknown = Call(daemon_, LabelCommand("Nobody/h", 1, v1::LABEL_GOOD));
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(unknown->ok());
  EXPECT_NE(unknown->error().find("unknown histogram"), std::string::npos);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, AcknowledgedAlarmIsStillAcknowledgedAfterRestart) {
  StartWith(1.0);
  for (std::uint64_t run = 1; run <= 20; ++run) {
    bus_->Send(Bus::Make("C/Ack", run, Toy().runs[0].counts, v1::LABEL_GOOD));
  }
  ASSERT_EQ(bus_->Collect("C/Ack", 1, 20).size(), 20u);
  std::vector<double> broken = Toy().runs[0].counts;
  std::fill(broken.begin() + 50, broken.end(), 0.0);
  bus_->Send(Bus::Make("C/Ack", 21, broken));
  ASSERT_TRUE(bus_->Collect("C/Ack", 21, 21).at(21).anomalous());

  v1::Command ack;
  ack.set_user("shifter");
  ack.mutable_acknowledge()->set_histogram("C/Ack");
  const auto acked = Call(daemon_, ack);
  ASSERT_TRUE(acked && acked->ok()) << (acked ? acked->error() : "no reply");
  Restart();

  v1::Command table;
  table.mutable_get_alarms()->set_prefix("C/");
  const auto alarms = Call(daemon_, table);
  ASSERT_TRUE(alarms && alarms->ok());
  ASSERT_EQ(alarms->alarms().alarms_size(), 1);
  EXPECT_EQ(alarms->alarms().alarms(0).state(), v1::ALARM_STATE_ACKNOWLEDGED);
  EXPECT_EQ(alarms->alarms().alarms(0).user(), "shifter");
  EXPECT_GT(alarms->alarms().last_sequence(), 0u);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, RunSummaryComesWhenEveryHistogramOfTheRunIsIn) {
  std::string config = daemon_.ConfigText(1.0);
  config.replace(config.find("  heartbeat_s: 0.2\n"), 18,
                 "  heartbeat_s: 0.2\n  run_summary_after_s: 3\n");
  daemon_.WriteConfig(config);
  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();
  // Run 10 is summarised by the timer; it tells the daemon which histograms a run has.
  for (const char* name : {"S/a", "S/b", "S/c"}) {
    bus_->Send(Bus::Make(name, 10, Toy().runs[0].counts, v1::LABEL_GOOD));
  }
  ASSERT_EQ(bus_->Take("run/10", 1).size(), 1u);
  std::vector<double> broken = Toy().runs[1].counts;
  std::fill(broken.begin(), broken.begin() + 50, 0.0);
  bus_->Send(Bus::Make("S/a", 11, Toy().runs[1].counts));
  bus_->Send(Bus::Make("S/b", 11, broken));
  bus_->Send(Bus::Make("S/c", 11, Toy().runs[1].counts));
  // Complete with its third final: well before run_summary_after_s.
  const auto bodies = bus_->Take("run/11", 1, 1500ms);
  ASSERT_EQ(bodies.size(), 1u);
  v1::RunSummary summary;
  ASSERT_TRUE(summary.ParseFromString(bodies[0]));
  EXPECT_EQ(summary.run(), 11u);
  EXPECT_EQ(summary.histograms(), 3u);
  EXPECT_EQ(summary.major(), 1u);
  ASSERT_GE(summary.worst_size(), 1);
  EXPECT_EQ(summary.worst(0).histogram(), "S/b");
  EXPECT_GT(summary.sequence(), 0u);
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, RemoteControlWithoutCurveIsRefusedAtStart) {
  std::string config = daemon_.ConfigText(1.0);
  const std::string bind = Tcp(daemon_.control());
  config.replace(config.find(bind), bind.size(),
                 "tcp://0.0.0.0:" + std::to_string(daemon_.control()));
  daemon_.WriteConfig(config);
  daemon_.Start();
  EXPECT_EQ(daemon_.Wait(10s), 2);
  EXPECT_NE(daemon_.Log().find("control.allow_remote"), std::string::npos) << daemon_.Log();
}

TEST_F(DinamodTest, CurveControlAnswersOnlyListedClients) {
  char server_pub[41], server_sec[41], ok_pub[41], ok_sec[41], other_pub[41], other_sec[41];
  ASSERT_EQ(zmq_curve_keypair(server_pub, server_sec), 0);
  ASSERT_EQ(zmq_curve_keypair(ok_pub, ok_sec), 0);
  ASSERT_EQ(zmq_curve_keypair(other_pub, other_sec), 0);
  std::string config = daemon_.ConfigText(1.0);
  const std::string bind = "control:\n  bind: \"" + Tcp(daemon_.control()) + "\"\n";
  config.replace(config.find(bind), bind.size(),
                 bind + "  curve:\n    server_public_key: \"" + server_pub +
                     "\"\n    server_secret_key: \"" + server_sec + "\"\n    allowed_clients: [\"" +
                     ok_pub + "\"]\n");
  daemon_.WriteConfig(config);
  daemon_.Start();
  bus_ = std::make_unique<Bus>(daemon_);
  ASSERT_TRUE(bus_->WaitReady(daemon_)) << daemon_.Log();

  v1::Command status;
  status.mutable_status();
  const auto allowed = Call(daemon_, status, CurveClient{server_pub, ok_pub, ok_sec});
  ASSERT_TRUE(allowed);
  EXPECT_TRUE(allowed->ok());
  EXPECT_FALSE(Call(daemon_, status, CurveClient{server_pub, other_pub, other_sec}, 1500ms));
  EXPECT_FALSE(Call(daemon_, status, std::nullopt, 1500ms));
  EXPECT_TRUE(daemon_.Alive());
  EXPECT_EQ(MetricValue(Metrics(), "dinamo_control_clients_refused_total"), 1.0);
  EXPECT_EQ(daemon_.Stop(), 0);
}

// Whether a subscriber (CurveZMQ client when `curve` is set) receives a heartbeat within 2 s.
bool HearsAHeartbeat(const DaemonProcess& d, const std::optional<CurveClient>& curve) {
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  if (curve) {
    sub.set(zmq::sockopt::curve_serverkey, curve->server_public);
    sub.set(zmq::sockopt::curve_publickey, curve->client_public);
    sub.set(zmq::sockopt::curve_secretkey, curve->client_secret);
  }
  sub.set(zmq::sockopt::subscribe, "heartbeat");
  sub.connect(Tcp(d.output()));
  zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
  return zmq::poll(&item, 1, 2s) > 0;
}

TEST_F(DinamodTest, CurveOutputReachesOnlyListedSubscribers) {
  char server_pub[41], server_sec[41], ok_pub[41], ok_sec[41], other_pub[41], other_sec[41];
  ASSERT_EQ(zmq_curve_keypair(server_pub, server_sec), 0);
  ASSERT_EQ(zmq_curve_keypair(ok_pub, ok_sec), 0);
  ASSERT_EQ(zmq_curve_keypair(other_pub, other_sec), 0);
  std::string config = daemon_.ConfigText(1.0);
  const std::string beat = "  heartbeat_s: 0.2\n";
  config.replace(config.find(beat), beat.size(),
                 beat + "  curve:\n    server_public_key: \"" + server_pub +
                     "\"\n    server_secret_key: \"" + server_sec + "\"\n    allowed_clients: [\"" +
                     ok_pub + "\"]\n");
  daemon_.WriteConfig(config);
  daemon_.Start();
  EXPECT_TRUE(HearsAHeartbeat(daemon_, CurveClient{server_pub, ok_pub, ok_sec})) << daemon_.Log();
  EXPECT_FALSE(HearsAHeartbeat(daemon_, CurveClient{server_pub, other_pub, other_sec}));
  EXPECT_FALSE(HearsAHeartbeat(daemon_, std::nullopt));
  EXPECT_TRUE(daemon_.Alive());
  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_F(DinamodTest, HttpEndpointsServeMetricsHealthAndStatus) {
  StartWith(1.0);
  Stream(*bus_, "A/h", 0, 5);
  ASSERT_EQ(bus_->Collect("A/h", 1, 5).size(), 5u);
  const std::string metrics = Metrics();
  for (const char* name : {"dinamo_histograms_received_total", "dinamo_verdicts_published_total",
                           "dinamo_alarms_raised_total", "dinamo_templates",
                           "dinamo_input_queue_depth", "dinamo_verdict_latency_seconds_count"}) {
    EXPECT_GE(MetricValue(metrics, name), 0.0) << name;
  }
  EXPECT_GE(MetricValue(metrics, "dinamo_verdicts_published_total"), 5.0);
  EXPECT_EQ(HttpGet(daemon_.http(), "/healthz"), "ok\n");
  EXPECT_NE(HttpGet(daemon_.http(), "/status").find("\"templates\":"), std::string::npos);
}

TEST_F(DinamodTest, TellsSystemdWhenReadyReloadingAndStopping) {
  const std::string path = daemon_.config_path() + ".notify";
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto next = [fd] {
    char buf[256];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("(nothing)");
  };

  daemon_.WriteConfig(daemon_.ConfigText(1.0));
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  daemon_.Start();
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(next(), "READY=1");
  daemon_.Signal(SIGHUP);
  EXPECT_EQ(next(), "RELOADING=1");
  EXPECT_EQ(next(), "READY=1");
  daemon_.Signal(SIGTERM);
  EXPECT_EQ(next(), "STOPPING=1");
  EXPECT_EQ(daemon_.Wait(10s), 0);
  ::close(fd);
}

TEST_F(DinamodTest, InvalidConfigAtStartExitsWithCode2) {
  daemon_.WriteConfig(daemon_.ConfigText(1.0) + "  alpha_typo: 3\n");
  daemon_.Start();
  EXPECT_EQ(daemon_.Wait(10s), 2);
  EXPECT_NE(daemon_.Log().find("defaults.alpha_typo"), std::string::npos);
}

}  // namespace
}  // namespace dinamo::testing
