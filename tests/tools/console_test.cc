// dinamo-console against a stand-in daemon: a PUB socket and a REP socket on free loopback ports
// in the test process.

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "dinamo/v1/control.pb.h"
#include "dinamo/v1/verdict.pb.h"
#include <gtest/gtest.h>
#include <zmq.hpp>

#include "support/process.h"

namespace dinamo {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunCommand;

std::string Console(const std::string& args) {
  return BinaryPath("tools/dinamo-console") + " " + args;
}

v1::Alarm RaisedAlarm(const std::string& name, std::uint64_t sequence) {
  v1::Alarm a;
  a.set_histogram(name);
  a.set_run(42);
  a.set_state(v1::ALARM_STATE_UNACKNOWLEDGED);
  a.set_severity(v1::SEVERITY_MAJOR);
  a.set_event(v1::ALARM_EVENT_RAISED);
  a.set_sequence(sequence);
  a.set_time_unix_ns(1767225600000000000);
  auto* v = a.mutable_verdict();
  v->set_histogram(name);
  v->set_log_reduced_chi2(2.5);
  v->set_threshold(1.0);
  auto* p = v->add_pulls();
  p->set_bin(17);
  p->set_pull(8.25);
  return a;
}

// A stand-in for the daemon's PUB socket: publishes what `next` makes, every 20 ms, until the
// console run in the background has exited.
class FakePublisher {
 public:
  FakePublisher() : pub_(context_, zmq::socket_type::pub) {
    pub_.bind("tcp://127.0.0.1:*");
    endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
  }

  const std::string& endpoint() const { return endpoint_; }

  // `next(i)` gives the topic and the body of message i.
  ProcessResult RunConsole(const std::string& args,
                           const std::function<std::pair<std::string, std::string>(int)>& next,
                           int max_seconds = 10) {
    std::atomic<bool> done = false;
    ProcessResult result;
    std::thread console([&] {
      result = RunCommand(Console("--connect " + endpoint_ + " --max-seconds " +
                                  std::to_string(max_seconds) + " " + args));
      done = true;
    });
    for (int i = 0; !done; ++i) {
      const auto [topic, body] = next(i);
      pub_.send(zmq::buffer(topic), zmq::send_flags::sndmore);
      pub_.send(zmq::buffer(body), zmq::send_flags::none);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    console.join();
    return result;
  }

 private:
  zmq::context_t context_;
  zmq::socket_t pub_;
  std::string endpoint_;
};

TEST(ConsoleFollow, PrintsOneLinePerAlarm) {
  FakePublisher daemon;
  const auto r = daemon.RunConsole("--exit-after 1", [](int i) {
    return std::pair{std::string("alarm/VELO/ClusterSize"),
                     RaisedAlarm("VELO/ClusterSize", i + 1).SerializeAsString()};
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ALARM RAISED VELO/ClusterSize state=UNACKNOWLEDGED severity=MAJOR "
                          "run=42 s=2.500 > T=1.000 worst bin=17 pull=+8.25"),
            std::string::npos)
      << r.output;
}

TEST(ConsoleFollow, PrefixKeepsOnlyMatchingHistograms) {
  FakePublisher daemon;
  const auto r = daemon.RunConsole("--prefix RICH/ --exit-after 2", [](int i) {
    const std::string name = i % 2 == 0 ? "VELO/ClusterSize" : "RICH/PhotonYield";
    return std::pair{"alarm/" + name, RaisedAlarm(name, i + 1).SerializeAsString()};
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("RICH/PhotonYield"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("VELO/ClusterSize"), std::string::npos) << r.output;
}

TEST(ConsoleFollow, VerdictsArePrintedOnlyWhenAskedFor) {
  const auto verdict = [](int i) {
    v1::Verdict v;
    v.set_histogram("ECAL/Occupancy");
    v.set_run(7);
    v.set_final(true);
    v.set_sequence(static_cast<std::uint64_t>(i + 1));
    v.set_log_reduced_chi2(-0.5);
    v.set_threshold(1.0);
    return std::pair{std::string("verdict/ECAL/Occupancy"), v.SerializeAsString()};
  };
  FakePublisher with;
  const auto shown = with.RunConsole("--verdicts --exit-after 1", verdict);
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_NE(shown.output.find("VERDICT ECAL/Occupancy run=7 final"), std::string::npos)
      << shown.output;

  // Without --verdicts: the console runs a second, sees the heartbeats in between (so it was
  // connected), and prints no verdict.
  FakePublisher without;
  const auto hidden = without.RunConsole(
      "",
      [&](int i) {
        if (i % 2 == 0) {
          return verdict(i);
        }
        v1::Heartbeat h;
        h.set_sequence(static_cast<std::uint64_t>(i + 1));
        return std::pair{std::string("heartbeat"), h.SerializeAsString()};
      },
      1);
  EXPECT_EQ(hidden.exit_code, 0) << hidden.output;
  EXPECT_EQ(hidden.output.find("VERDICT"), std::string::npos) << hidden.output;
  EXPECT_EQ(hidden.output.find("heartbeats=0"), std::string::npos) << hidden.output;
  EXPECT_NE(hidden.output.find("verdicts=0"), std::string::npos) << hidden.output;
}

TEST(ConsoleFollow, NoticesAGapInTheSequenceNumbers) {
  FakePublisher daemon;
  // Every fifth number is skipped: 1 2 3 4 6 7 8 9 11 ...
  const auto r = daemon.RunConsole("--verdicts --exit-after 12", [](int i) {
    v1::Verdict v;
    v.set_histogram("MUON/Efficiency");
    v.set_sequence(static_cast<std::uint64_t>(i + 1 + i / 4));
    return std::pair{std::string("verdict/MUON/Efficiency"), v.SerializeAsString()};
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GAP missed=1"), std::string::npos) << r.output;
}

TEST(ConsoleFollow, ExitsCleanlyOnSigterm) {
  FakePublisher daemon;
  const auto r = RunCommand("timeout --preserve-status -s TERM 1 " +
                            Console("--connect " + daemon.endpoint()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("received alarms=0"), std::string::npos) << r.output;
}

// A stand-in for the daemon's control socket: answers one command with what `answer` makes.
ProcessResult RunCommandAgainst(const std::string& args,
                                const std::function<v1::Reply(const v1::Command&)>& answer) {
  zmq::context_t context;
  zmq::socket_t rep(context, zmq::socket_type::rep);
  rep.set(zmq::sockopt::rcvtimeo, 10000);
  rep.bind("tcp://127.0.0.1:*");
  const std::string endpoint = rep.get(zmq::sockopt::last_endpoint);
  ProcessResult result;
  std::thread console([&] { result = RunCommand(Console("--control " + endpoint + " " + args)); });
  zmq::message_t request;
  if (rep.recv(request)) {
    v1::Command command;
    command.ParseFromArray(request.data(), static_cast<int>(request.size()));
    rep.send(zmq::buffer(answer(command).SerializeAsString()), zmq::send_flags::none);
  }
  console.join();
  return result;
}

TEST(ConsoleCommand, StatusPrintsTheDaemonsAnswer) {
  const auto r = RunCommandAgainst("--status", [](const v1::Command& c) {
    v1::Reply reply;
    reply.set_ok(c.has_status());
    reply.mutable_status()->set_version("test-1");
    reply.mutable_status()->set_templates(12);
    return reply;
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("version=test-1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("templates=12"), std::string::npos) << r.output;
}

TEST(ConsoleCommand, AlarmsPrintsOneRowPerAlarm) {
  v1::Command seen;
  const auto r = RunCommandAgainst("--alarms --prefix VELO/", [&](const v1::Command& c) {
    seen = c;
    v1::Reply reply;
    reply.set_ok(true);
    *reply.mutable_alarms()->add_alarms() = RaisedAlarm("VELO/ClusterSize", 3);
    *reply.mutable_alarms()->add_alarms() = RaisedAlarm("VELO/ResidualX", 4);
    reply.mutable_alarms()->set_last_sequence(4);
    return reply;
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(seen.has_get_alarms());
  EXPECT_EQ(seen.get_alarms().prefix(), "VELO/");
  EXPECT_NE(r.output.find("VELO/ResidualX"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2 alarms, last_sequence=4"), std::string::npos) << r.output;
}

TEST(ConsoleCommand, TemplatePrintsEveryBin) {
  const auto r = RunCommandAgainst("--template ECAL/Occupancy", [](const v1::Command& c) {
    v1::Reply reply;
    reply.set_ok(c.get_template().histogram() == "ECAL/Occupancy");
    auto* t = reply.mutable_template_();
    t->set_histogram("ECAL/Occupancy");
    for (int b = 0; b < 3; ++b) {
      t->add_mu(0.25 + 0.125 * b);
      t->add_sigma(0.01);
      t->add_last_pulls(-1.5 + b);
    }
    return reply;
  });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("template ECAL/Occupancy"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("     2            0.5           0.01     +0.500"), std::string::npos)
      << r.output;
}

TEST(ConsoleCommand, LabelSendsHistogramRunAndLabel) {
  v1::Command seen;
  const auto r =
      RunCommandAgainst("--label HCAL/Occupancy 42 bad --user alice", [&](const v1::Command& c) {
        seen = c;
        v1::Reply reply;
        reply.set_ok(true);
        reply.mutable_action()->set_affected(1);
        return reply;
      });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(seen.has_set_label());
  EXPECT_EQ(seen.set_label().histogram(), "HCAL/Occupancy");
  EXPECT_EQ(seen.set_label().run(), 42u);
  EXPECT_EQ(seen.set_label().label(), v1::LABEL_BAD);
  EXPECT_EQ(seen.user(), "alice");
  EXPECT_NE(r.output.find("ok affected=1"), std::string::npos) << r.output;
}

TEST(ConsoleCommand, RefusalIsPrintedWithExitCodeThree) {
  const auto r = RunCommandAgainst("--rebaseline 'VELO/*'", [](const v1::Command& c) {
    v1::Reply reply;
    reply.set_ok(false);
    reply.set_error(c.has_rebaseline() ? "not implemented yet" : "wrong command");
    return reply;
  });
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("refused: not implemented yet"), std::string::npos) << r.output;
}

TEST(ConsoleCommand, NoReplyTimesOutWithExitCodeOne) {
  zmq::context_t context;
  zmq::socket_t silent(context, zmq::socket_type::rep);
  silent.bind("tcp://127.0.0.1:*");
  const std::string endpoint = silent.get(zmq::sockopt::last_endpoint);
  const auto r = RunCommand(Console("--control " + endpoint + " --status --timeout-s 0.5"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no reply"), std::string::npos) << r.output;
}

TEST(ConsoleCommand, MalformedLabelIsAUsageError) {
  const auto r = RunCommand(Console("--label HCAL/Occupancy 42 maybe"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace dinamo
