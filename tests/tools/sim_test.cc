// dinamo-sim as a user runs it: the CSV mode read back by the library and by dinamo-replay, and
// the bus mode received by a subscriber on loopback.

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dinamo/v1/histogram.pb.h"
#include <gtest/gtest.h>
#include <zmq.hpp>

#include "dinamo/run_table.h"
#include "support/process.h"
#include <unistd.h>

namespace dinamo {
namespace {

namespace fs = std::filesystem;
using testing::BinaryPath;
using testing::RunCommand;

class SimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ =
        fs::temp_directory_path() / ("dinamo-sim-test-" + std::to_string(::getpid()) + "-" + test);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::string Sim(const std::string& args) { return BinaryPath("tools/dinamo-sim") + " " + args; }

TEST_F(SimTest, CsvModeWritesReplayInputAndTruthBeside) {
  const auto r = RunCommand(Sim("--csv " + Path("toy.csv") + " --runs 50 --seed 1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const RunTable table = ReadRunTable(Path("toy.csv"));
  EXPECT_EQ(table.runs.size(), 50u);
  EXPECT_EQ(table.bins(), 100u);

  std::ifstream truth(Path("toy_truth.csv"));
  std::string line;
  std::getline(truth, line);
  EXPECT_EQ(line, "run,mu,sigma,is_rapid_change_mu,is_rapid_change_sigma,n_dead_bins");
  int rows = 0;
  while (std::getline(truth, line)) {
    ++rows;
  }
  EXPECT_EQ(rows, 50);
}

TEST_F(SimTest, CsvModeOutputIsReadByReplay) {
  ASSERT_EQ(RunCommand(Sim("--csv " + Path("toy.csv") + " --runs 300 --seed 2")).exit_code, 0);
  const auto r = RunCommand(BinaryPath("tools/dinamo-replay") + " " + Path("toy.csv") +
                            " --calibrate 100 --out " + Path("v.csv"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(Path("v.csv")));
}

TEST_F(SimTest, CsvModeIsDeterministicForASeed) {
  ASSERT_EQ(RunCommand(Sim("--csv " + Path("a.csv") + " --runs 20 --seed 3")).exit_code, 0);
  ASSERT_EQ(RunCommand(Sim("--csv " + Path("b.csv") + " --runs 20 --seed 3")).exit_code, 0);
  std::ifstream a(Path("a.csv")), b(Path("b.csv"));
  const std::string text_a((std::istreambuf_iterator<char>(a)), {});
  const std::string text_b((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(text_a, text_b);
}

TEST_F(SimTest, WithoutModeItRefusesWithUsageExitCode) {
  EXPECT_EQ(RunCommand(Sim("--runs 5")).exit_code, 2);
}

struct Received {
  std::string topic;
  v1::Histogram histogram;
};

// Binds a SUB socket on a free loopback port, runs dinamo-sim connecting to it, and collects
// `expected` messages (or whatever arrived within ten seconds).
std::vector<Received> ReceiveFromSim(const std::string& args, std::size_t expected,
                                     testing::ProcessResult& sim_result) {
  zmq::context_t context;
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "");
  sub.set(zmq::sockopt::rcvtimeo, 10000);
  sub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = sub.get(zmq::sockopt::last_endpoint);

  std::thread sim([&] { sim_result = RunCommand(Sim("--connect " + endpoint + " " + args)); });
  std::vector<Received> got;
  while (got.size() < expected) {
    zmq::message_t topic, body;
    if (!sub.recv(topic) || !sub.recv(body)) {
      break;
    }
    Received r;
    r.topic = topic.to_string();
    r.histogram.ParseFromArray(body.data(), static_cast<int>(body.size()));
    got.push_back(std::move(r));
  }
  sim.join();
  return got;
}

TEST(SimBus, PublishesSnapshotsThenFinalsOfEveryHistogramInSequence) {
  testing::ProcessResult result;
  const auto got = ReceiveFromSim(
      "--histograms 3 --runs 4 --snapshots 2 --seed 5 --wait-s 0.5 --labels on", 36, result);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  ASSERT_EQ(got.size(), 36u) << result.output;

  std::set<std::string> subdetectors;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& h = got[i].histogram;
    EXPECT_EQ(got[i].topic, h.name());
    EXPECT_EQ(h.sequence(), i + 1);
    EXPECT_EQ(h.run(), 1 + i / 9);
    const bool final = i % 9 >= 6;
    EXPECT_EQ(h.final(), final) << "message " << i;
    EXPECT_EQ(h.label() != v1::LABEL_UNSPECIFIED, final) << "message " << i;
    ASSERT_EQ(h.axes_size(), 1);
    EXPECT_EQ(static_cast<int>(h.axes(0).bins()), h.counts_size());
    EXPECT_GT(h.time_unix_ns(), 0);
    EXPECT_FALSE(h.source().empty());
    subdetectors.insert(h.name().substr(0, h.name().find('/')));
  }
  EXPECT_GE(subdetectors.size(), 2u);
  // Bin counts are cycled over the histograms: 100, 50, 100.
  EXPECT_EQ(got[0].histogram.counts_size(), 100);
  EXPECT_EQ(got[1].histogram.counts_size(), 50);
}

TEST(SimBus, SnapshotsAreCumulativeUpToTheFinal) {
  testing::ProcessResult result;
  const auto got =
      ReceiveFromSim("--histograms 1 --runs 2 --snapshots 3 --seed 7 --wait-s 0.5", 8, result);
  ASSERT_EQ(got.size(), 8u) << result.output;
  for (std::size_t run = 0; run < 2; ++run) {
    for (std::size_t k = 0; k + 1 < 4; ++k) {
      const auto& earlier = got[run * 4 + k].histogram;
      const auto& later = got[run * 4 + k + 1].histogram;
      for (int b = 0; b < earlier.counts_size(); ++b) {
        ASSERT_LE(earlier.counts(b), later.counts(b)) << "run " << run << " snapshot " << k;
      }
    }
    EXPECT_TRUE(got[run * 4 + 3].histogram.final());
  }
}

TEST(SimBus, PoolRepeatsTheDrawnRunsUnderIncreasingRunNumbers) {
  testing::ProcessResult result;
  const auto got =
      ReceiveFromSim("--histograms 1 --runs 4 --pool 2 --seed 3 --wait-s 0.5", 4, result);
  ASSERT_EQ(got.size(), 4u) << result.output;
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(got[i].histogram.run(), i + 1);
  }
  const auto counts = [&](std::size_t i) {
    const auto& c = got[i].histogram.counts();
    return std::vector<double>(c.begin(), c.end());
  };
  EXPECT_EQ(counts(2), counts(0));
  EXPECT_EQ(counts(3), counts(1));
  EXPECT_NE(counts(1), counts(0));
}

TEST_F(SimTest, HistogramOfIndexIDrawsWhatCsvModeDrawsWithSeedPlusI) {
  testing::ProcessResult result;
  const auto got = ReceiveFromSim("--histograms 2 --runs 3 --seed 10 --wait-s 0.5", 6, result);
  ASSERT_EQ(got.size(), 6u) << result.output;
  ASSERT_EQ(RunCommand(Sim("--csv " + Path("h1.csv") +
                           " --runs 3 --seed 11 --bins 50 --sampling multinomial"))
                .exit_code,
            0);
  const RunTable table = ReadRunTable(Path("h1.csv"));
  for (std::size_t run = 0; run < 3; ++run) {
    const auto& h = got[run * 2 + 1].histogram;
    ASSERT_EQ(static_cast<std::size_t>(h.counts_size()), table.bins());
    for (int b = 0; b < h.counts_size(); ++b) {
      ASSERT_EQ(h.counts(b), table.runs[run].counts[static_cast<std::size_t>(b)]);
    }
  }
}

}  // namespace
}  // namespace dinamo
