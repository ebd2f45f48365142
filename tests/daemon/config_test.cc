#include "config.h"

#include <string>

#include <gtest/gtest.h>
#include <zmq.h>

namespace dinamo::daemon {
namespace {

const std::string kMinimal = R"(input:
  connect: ["tcp://127.0.0.1:5550"]
)";

// The message of the ConfigError thrown for `text`, or "" when it parses.
std::string ErrorOf(const std::string& text) {
  try {
    ParseConfig(text, "test.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, MinimalFileGetsTheDocumentedDefaults) {
  const Config c = ParseConfig(kMinimal, "test.yaml");
  EXPECT_EQ(c.input_connect, std::vector<std::string>{"tcp://127.0.0.1:5550"});
  EXPECT_EQ(c.input_max_message_bytes, 16u << 20);
  EXPECT_EQ(c.defaults.method, "ewma");
  EXPECT_EQ(c.defaults.alpha, 0.5);
  EXPECT_EQ(c.defaults.auto_accept, AutoAccept::kBelowThreshold);
  EXPECT_EQ(c.http_host, "127.0.0.1");
  EXPECT_EQ(c.http_port, 8080);
}

TEST(Config, EveryContractKeyIsRead) {
  const Config c = ParseConfig(R"(input:
  connect: ["tcp://10.0.0.1:5550", "ipc:///tmp/readout"]
  subscribe: ["VELO/", "RICH/"]
  max_message_bytes: 1048576
output:
  bind: "tcp://*:6001"
  heartbeat_s: 2
control:
  bind: "tcp://127.0.0.1:6002"
http:
  bind: "0.0.0.0:9100"
state:
  directory: /var/lib/dinamo
  snapshot_interval_s: 60
log:
  level: debug
defaults:
  method: ewma
  alpha: 0.8
  threshold: 2.0
  warning_threshold: 1.5
  warmup_runs: 3
  auto_accept: never
  journal_runs: 20
  min_entries: 100
)",
                               "test.yaml");
  EXPECT_EQ(c.input_subscribe.size(), 2u);
  EXPECT_EQ(c.input_max_message_bytes, 1048576u);
  EXPECT_EQ(c.output_bind, "tcp://*:6001");
  EXPECT_EQ(c.heartbeat_s, 2.0);
  EXPECT_EQ(c.http_host, "0.0.0.0");
  EXPECT_EQ(c.http_port, 9100);
  EXPECT_EQ(c.state_directory, "/var/lib/dinamo");
  EXPECT_EQ(c.snapshot_interval_s, 60.0);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.defaults.alpha, 0.8);
  EXPECT_EQ(c.defaults.threshold, 2.0);
  EXPECT_EQ(c.defaults.warning_threshold, 1.5);
  EXPECT_EQ(c.defaults.warmup_runs, 3u);
  EXPECT_EQ(c.defaults.auto_accept, AutoAccept::kNever);
  EXPECT_EQ(c.defaults.journal_runs, 20u);
  EXPECT_EQ(c.defaults.min_entries, 100.0);
}

TEST(Config, EmptySectionMeansItsDefaults) {
  EXPECT_EQ(ParseConfig(kMinimal + "log:\nrules:\n", "t").log_level, "info");
}

TEST(Config, UnknownKeyIsRefusedNamingKeyAndFile) {
  const std::string e = ErrorOf(kMinimal + "defaults:\n  treshold: 2\n");
  EXPECT_NE(e.find("test.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("defaults.treshold"), std::string::npos) << e;
}

TEST(Config, UnknownTopLevelKeyIsRefused) {
  EXPECT_NE(ErrorOf(kMinimal + "outputs:\n  bind: tcp://*:1\n").find("outputs"), std::string::npos);
}

TEST(Config, AlphaOutsideUnitIntervalIsRefused) {
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  alpha: 1.5\n").find("defaults.alpha"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  alpha: -0.1\n").find("defaults.alpha"),
            std::string::npos);
  EXPECT_EQ(ErrorOf(kMinimal + "defaults:\n  alpha: 1\n"), "");
}

TEST(Config, ThresholdThatIsNotFiniteIsRefused) {
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  threshold: .inf\n").find("defaults.threshold"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  threshold: .nan\n").find("must be finite"),
            std::string::npos);
}

TEST(Config, WrongTypesAreRefused) {
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  alpha: high\n").find("defaults.alpha"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  warmup_runs: -3\n").find("defaults.warmup_runs"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  warmup_runs: [1]\n").find("non-negative"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "state:\n  directory: [a]\n").find("state.directory"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults: 3\n").find("defaults"), std::string::npos);
}

TEST(Config, UnparsableEndpointsAreRefused) {
  EXPECT_NE(ErrorOf("input:\n  connect: [\"tcp://127.0.0.1\"]\n").find("input.connect[0]"),
            std::string::npos);
  EXPECT_NE(ErrorOf("input:\n  connect: [\"tcp://*:5550\"]\n").find("input.connect[0]"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "output:\n  bind: localhost:5551\n").find("output.bind"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "control:\n  bind: udp://1.2.3.4:5\n").find("control.bind"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "http:\n  bind: 127.0.0.1:99999\n").find("http.bind"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "http:\n  bind: \"8080\"\n").find("http.bind"), std::string::npos);
}

TEST(Config, InputWithoutEndpointIsRefused) {
  EXPECT_NE(ErrorOf("input:\n  subscribe: [\"A/\"]\n").find("input"), std::string::npos);
}

TEST(Config, BrokenYamlAppendedToAValidFileIsRefused) {
  const std::string e =
      ErrorOf(kMinimal + "defaults:\n  threshold: 2\n" + "defaults: [this is: not valid\n");
  EXPECT_NE(e.find("test.yaml"), std::string::npos) << e;
}

TEST(Config, AutoAcceptPolicyMustBeKnown) {
  EXPECT_EQ(ParseConfig(kMinimal + "defaults:\n  auto_accept: always\n", "t").defaults.auto_accept,
            AutoAccept::kAlways);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  auto_accept: sometimes\n").find("auto_accept"),
            std::string::npos);
}

TEST(Config, TransformerIsRefusedWithoutAFactory) {
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  method: transformer\n").find("not available"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  method: magic\n").find("unknown method"),
            std::string::npos);
}

TEST(Config, MethodWithARegisteredFactoryIsAccepted) {
  RegisterModelFactory("test_method", [](std::size_t bins, const HistogramSettings& s) {
    return std::make_unique<EwmaModel>(bins, s.alpha);
  });
  EXPECT_EQ(ParseConfig(kMinimal + "defaults:\n  method: test_method\n", "t").defaults.method,
            "test_method");
}

TEST(Config, WarningThresholdAboveThresholdIsRefused) {
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  threshold: 1\n  warning_threshold: 2\n")
                .find("defaults.warning_threshold"),
            std::string::npos);
}

TEST(Config, RuleWithUnknownKeyIsRefusedWithItsIndex) {
  EXPECT_NE(ErrorOf(kMinimal + "rules:\n  - match: \"A/*\"\n  - match: B\n    alpa: 1\n")
                .find("rules[1].alpa"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal + "rules:\n  - threshold: 2\n").find("rules[0].match"),
            std::string::npos);
}

TEST(Config, CurveKeysAreValidated) {
  char pub[41], sec[41], client[41], client_sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  ASSERT_EQ(zmq_curve_keypair(client, client_sec), 0);
  const auto curve = [&](const std::string& p, const std::string& s, const std::string& c) {
    return kMinimal + "control:\n  bind: tcp://127.0.0.1:5552\n  curve:\n" +
           "    server_public_key: \"" + p + "\"\n    server_secret_key: \"" + s +
           "\"\n    allowed_clients: [\"" + c + "\"]\n";
  };
  const Config c = ParseConfig(curve(pub, sec, client), "t");
  ASSERT_TRUE(c.control_curve.has_value());
  EXPECT_EQ(c.control_curve->allowed_clients, std::vector<std::string>{client});
  EXPECT_NE(ErrorOf(curve(client, sec, client)).find("does not belong"), std::string::npos);
  EXPECT_NE(ErrorOf(curve(pub, sec, "short")).find("allowed_clients[0]"), std::string::npos);
}

TEST(Config, OutputCurveKeysAreReadAndValidated) {
  char pub[41], sec[41], client[41], client_sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  ASSERT_EQ(zmq_curve_keypair(client, client_sec), 0);
  const auto output = [&](const std::string& p) {
    return kMinimal + "output:\n  curve:\n    server_public_key: \"" + p +
           "\"\n    server_secret_key: \"" + sec + "\"\n    allowed_clients: [\"" + client +
           "\"]\n";
  };
  const Config c = ParseConfig(output(pub), "t");
  ASSERT_TRUE(c.output_curve.has_value());
  EXPECT_FALSE(c.control_curve.has_value());
  EXPECT_EQ(c.output_curve->allowed_clients, std::vector<std::string>{client});
  EXPECT_NE(ErrorOf(output(client)).find("output.curve.server_public_key"), std::string::npos);
}

TEST(Config, RemoteControlWithoutCurveNeedsAllowRemote) {
  const std::string remote = kMinimal + "control:\n  bind: tcp://0.0.0.0:5552\n";
  EXPECT_NE(ErrorOf(remote).find("control.allow_remote"), std::string::npos);
  EXPECT_NE(ErrorOf(remote).find("control.bind"), std::string::npos);
  EXPECT_TRUE(ParseConfig(remote + "  allow_remote: true\n", "t").control_allow_remote);
  for (const char* local : {"tcp://127.0.0.1:5552", "tcp://localhost:5552", "tcp://[::1]:5552",
                            "ipc:///tmp/dinamo.control"}) {
    EXPECT_EQ(ErrorOf(kMinimal + "control:\n  bind: \"" + local + "\"\n"), "") << local;
  }
}

TEST(Config, AlarmDelaysAndRunSummaryAreRead) {
  const Config c = ParseConfig(kMinimal + R"(output:
  run_summary_after_s: 12
defaults:
  on_delay: 2
  off_delay: 3
rules:
  - match: "A/*"
    on_delay: 5
)",
                               "t");
  EXPECT_EQ(c.run_summary_after_s, 12.0);
  EXPECT_EQ(ResolveSettings(c, "B/x").on_delay, 2u);
  EXPECT_EQ(ResolveSettings(c, "B/x").off_delay, 3u);
  EXPECT_EQ(ResolveSettings(c, "A/x").on_delay, 5u);
  EXPECT_EQ(ParseConfig(kMinimal, "t").defaults.journal_runs, 100u);
  EXPECT_NE(ErrorOf(kMinimal + "defaults:\n  on_delay: 0\n").find("defaults.on_delay"),
            std::string::npos);
}

TEST(Rules, FirstMatchingRuleWins) {
  const Config c = ParseConfig(kMinimal + R"(defaults:
  threshold: 1.0
  alpha: 0.5
rules:
  - match: "VELO/*"
    threshold: 2.0
  - match: "VELO/Cluster*"
    threshold: 3.0
    alpha: 0.9
  - match: "*"
    auto_accept: never
)",
                               "t");
  EXPECT_EQ(ResolveSettings(c, "VELO/ClusterSize").threshold, 2.0);
  EXPECT_EQ(ResolveSettings(c, "VELO/ClusterSize").alpha, 0.5);  // not from the second rule
  EXPECT_EQ(ResolveSettings(c, "RICH/Hits").threshold, 1.0);
  EXPECT_EQ(ResolveSettings(c, "RICH/Hits").auto_accept, AutoAccept::kNever);
}

TEST(Rules, NameWithoutMatchingRuleGetsDefaults) {
  const Config c = ParseConfig(kMinimal +
                                   "defaults:\n  threshold: 1.5\nrules:\n"
                                   "  - match: \"A/?\"\n    threshold: 9\n",
                               "t");
  EXPECT_EQ(ResolveSettings(c, "A/xy").threshold, 1.5);
  EXPECT_EQ(ResolveSettings(c, "A/x").threshold, 9.0);
}

TEST(Rules, ResolverRecomputesAfterReset) {
  auto first =
      std::make_shared<const Config>(ParseConfig(kMinimal + "defaults:\n  threshold: 1.0\n", "t"));
  auto second =
      std::make_shared<const Config>(ParseConfig(kMinimal + "defaults:\n  threshold: 2.5\n", "t"));
  SettingsResolver resolver(first);
  EXPECT_EQ(resolver.For("X").threshold, 1.0);
  EXPECT_EQ(resolver.For("X").threshold, 1.0);  // cached
  resolver.Reset(second);
  EXPECT_EQ(resolver.For("X").threshold, 2.5);
}

TEST(Endpoint, AcceptsTheUsualForms) {
  EXPECT_FALSE(CheckEndpoint("tcp://127.0.0.1:5550", false));
  EXPECT_FALSE(CheckEndpoint("tcp://*:5550", true));
  EXPECT_FALSE(CheckEndpoint("tcp://*:*", true));
  EXPECT_FALSE(CheckEndpoint("ipc:///run/dinamo/in", false));
  EXPECT_FALSE(CheckEndpoint("inproc://x", true));
  EXPECT_TRUE(CheckEndpoint("tcp://host:0", false));
  EXPECT_TRUE(CheckEndpoint("127.0.0.1:5550", false));
}

}  // namespace
}  // namespace dinamo::daemon
