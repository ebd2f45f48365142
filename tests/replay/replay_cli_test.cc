// dinamo-replay as a user runs it: the contract of DESIGN.md section 7.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/golden.h"
#include "support/process.h"

namespace dinamo {
namespace {

namespace fs = std::filesystem;
using testing::BinaryPath;
using testing::DataPath;
using testing::RunCommand;

class ReplayCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() /
           ("dinamo-replay-test-" + std::to_string(::getpid()) + "-" + test);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  testing::ProcessResult Replay(const std::string& args) {
    return RunCommand(BinaryPath("tools/dinamo-replay") + " " + args);
  }

  std::string Write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

  std::string Out(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(ReplayCli, OutputMatchesReferenceChi2WithFullPrecision) {
  const auto r = Replay(DataPath("toy_1.csv") + " --alpha 0.5 --threshold 1.0 --out " +
                        Out("v.csv"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto golden = testing::ReadGoldenChi2("s_alpha0.5_1.csv");
  std::ifstream in(Out("v.csv"));
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header, "run,label,chi2,log_reduced_chi2,anomalous");
  const auto rows = testing::ReadNumericCsv(Out("v.csv"));
  ASSERT_EQ(rows.size(), golden.size());
  double worst = 0.0;
  for (const auto& row : rows) {
    worst = std::max(worst, testing::RelativeError(row[2], golden.at(std::int64_t(row[0]))));
    EXPECT_EQ(row[4], row[3] > 1.0 ? 1.0 : 0.0);
  }
  EXPECT_LT(worst, 1e-9);
}

TEST_F(ReplayCli, CalibrationReportHasChosenParametersAndBothRegimes) {
  const auto r = Replay(DataPath("toy_0.csv") + " --calibrate 1000 --out " + Out("v.csv") +
                        " --report " + Out("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto report = nlohmann::json::parse(std::ifstream(Out("r.json")));
  EXPECT_GT(report.at("alpha").get<double>(), 0.0);
  EXPECT_LT(report.at("alpha").get<double>(), 1.0);
  for (const char* regime : {"historical", "continual"}) {
    for (const char* m : {"balanced_accuracy", "accuracy", "sensitivity", "specificity",
                          "precision"}) {
      EXPECT_TRUE(report.at(regime).contains(m)) << regime << "." << m;
    }
  }
  // The reference pipeline reaches 0.9343 on this dataset.
  EXPECT_GE(report["continual"]["balanced_accuracy"].get<double>(), 0.9343 - 0.005);
}

TEST_F(ReplayCli, ReviewedLabelsReportHowManyWereUsed) {
  const auto r = Replay(DataPath("toy_0.csv") + " --calibrate 1000 --labels review --out " +
                        Out("v.csv") + " --report " + Out("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto report = nlohmann::json::parse(std::ifstream(Out("r.json")));
  EXPECT_EQ(report.at("labels"), "review");
  EXPECT_GT(report.at("labels_used").get<int>(), 0);
  EXPECT_LT(report.at("labels_used").get<int>(), 4000 * 16 / 100);
}

TEST_F(ReplayCli, BadInputStopsWithFileLineAndProblem) {
  const std::string bad = Write("bad.csv", "run,label,c0,c1\n0,0,1,2\n1,0,1,-5\n");

  const auto r = Replay(bad + " --out " + Out("v.csv"));

  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(bad + ":3: column c1: count -5 is negative"), std::string::npos)
      << r.output;
}

TEST_F(ReplayCli, MissingFileAndUnknownFlagExitTwo) {
  EXPECT_EQ(Replay(Out("absent.csv") + " --out " + Out("v.csv")).exit_code, 2);
  EXPECT_EQ(Replay(DataPath("toy_0.csv") + " --out " + Out("v.csv") + " --bogus").exit_code, 2);
}

TEST_F(ReplayCli, DebiasedReplayIsReproducibleForASeed) {
  const std::string input = Write("small.csv", [] {
    std::ifstream in(DataPath("toy_0.csv"));
    std::string text, line;
    for (int i = 0; i < 60 && std::getline(in, line); ++i) text += line + "\n";
    return text;
  }());

  const std::string args = input + " --debias --resamples 20 --seed 3 --out ";
  ASSERT_EQ(Replay(args + Out("a.csv")).exit_code, 0);
  ASSERT_EQ(Replay(args + Out("b.csv")).exit_code, 0);

  EXPECT_EQ(testing::ReadNumericCsv(Out("a.csv")), testing::ReadNumericCsv(Out("b.csv")));
}

}  // namespace
}  // namespace dinamo
