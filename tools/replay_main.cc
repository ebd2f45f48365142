// dinamo-replay: scores a recorded sequence of runs offline, optionally choosing alpha and the
// threshold on the first runs, and writes one verdict per run (DESIGN.md section 7).

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "dinamo/calibration.h"
#include "dinamo/replay.h"
#include "dinamo/run_table.h"
#include "dinamo/template_model.h"
#ifdef DINAMO_HAVE_TORCH
#include "dinamo/transformer_template.h"
#endif

namespace {

constexpr int kExitUsage = 2;

struct Options {
  std::string input;
  std::string out;
  std::string report;
  std::string method = "ewma";
  double alpha = 0.5;
  double threshold = 1.0;
  std::size_t calibrate = 0;
  bool debias = false;
  int resamples = 100;
  std::uint64_t seed = 0;
  std::string labels = "oracle";
  std::size_t label_delay = 0;
  int threads = 1;
};

dinamo::LabelPolicy PolicyOf(const std::string& name) {
  if (name == "review") return dinamo::LabelPolicy::kReview;
  if (name == "none") return dinamo::LabelPolicy::kNone;
  return dinamo::LabelPolicy::kOracle;
}

std::unique_ptr<dinamo::TemplateModel> MakeModel(const Options& o, std::size_t bins,
                                                 double alpha) {
  if (o.method == "ewma") return std::make_unique<dinamo::EwmaModel>(bins, alpha);
#ifdef DINAMO_HAVE_TORCH
  if (o.method == "transformer") {
    dinamo::TransformerOptions options;
    options.bins = bins;
    options.threads = o.threads;
    return std::make_unique<dinamo::TransformerModel>(options);
  }
#endif
  throw std::invalid_argument("--method " + o.method + " is not built into this binary");
}

std::vector<dinamo::Label> LabelsOf(const std::vector<dinamo::RunVerdict>& v, std::size_t from,
                                    std::size_t to) {
  std::vector<dinamo::Label> labels;
  for (std::size_t i = from; i < to; ++i) labels.push_back(v[i].label);
  return labels;
}

std::vector<double> ScoresOf(const std::vector<dinamo::RunVerdict>& v, std::size_t from,
                             std::size_t to) {
  std::vector<double> s;
  for (std::size_t i = from; i < to; ++i) s.push_back(v[i].log_reduced_chi2);
  return s;
}

double ChooseAlphaOn(const dinamo::RunTable& table, std::size_t n) {
  std::vector<dinamo::Label> labels;
  for (std::size_t i = 0; i < n; ++i) labels.push_back(table.runs[i].label);
  const auto choice = dinamo::ChooseAlpha([&](double alpha) {
    return dinamo::RocAuc(dinamo::ReplayEwmaScores(table, alpha, n), labels);
  });
  return choice.alpha;
}

nlohmann::json MetricsJson(const dinamo::Metrics& m) {
  return {{"balanced_accuracy", m.balanced_accuracy}, {"accuracy", m.accuracy},
          {"sensitivity", m.sensitivity},             {"specificity", m.specificity},
          {"precision", m.precision},                 {"runs", m.runs},
          {"positives", m.positives}};
}

void WriteVerdicts(const std::string& path, const std::vector<dinamo::RunVerdict>& verdicts,
                   double threshold) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error(path + ": cannot open for writing");
  std::fputs("run,label,chi2,log_reduced_chi2,anomalous\n", f);
  for (const auto& v : verdicts) {
    std::fprintf(f, "%lld,%d,%.17g,%.17g,%d\n", static_cast<long long>(v.run),
                 dinamo::LabelNumber(v.label), v.chi2, v.log_reduced_chi2,
                 v.log_reduced_chi2 > threshold ? 1 : 0);
  }
  if (std::fclose(f) != 0) throw std::runtime_error(path + ": write failed");
}

int Run(const Options& o) {
  const dinamo::RunTable table = dinamo::ReadRunTable(o.input);
  const std::size_t n_runs = table.runs.size();
  if (o.calibrate > n_runs) {
    throw std::invalid_argument("--calibrate " + std::to_string(o.calibrate) + " exceeds the " +
                                std::to_string(n_runs) + " runs of " + o.input);
  }

  double alpha = o.alpha;
  if (o.calibrate > 0 && o.method == "ewma") alpha = ChooseAlphaOn(table, o.calibrate);

  dinamo::ProtocolOptions protocol;
  protocol.labels = PolicyOf(o.labels);
  protocol.label_delay = o.label_delay;
  protocol.calibration_runs = o.calibrate;
  protocol.threshold = o.threshold;
  if (o.debias) protocol.debiasing = dinamo::Debiasing{o.resamples, o.seed};
  if (o.calibrate > 0) {
    protocol.choose_threshold = [&](const std::vector<dinamo::RunVerdict>& v) {
      return dinamo::ChooseThreshold(ScoresOf(v, 0, v.size()), LabelsOf(v, 0, v.size()));
    };
  }
  const auto result =
      dinamo::ReplayProtocol(table, MakeModel(o, table.bins(), alpha), protocol);
  const auto& verdicts = result.verdicts;
  const double threshold = result.threshold;
  WriteVerdicts(o.out, verdicts, threshold);

  const auto historical = dinamo::Evaluate(ScoresOf(verdicts, 0, o.calibrate),
                                           LabelsOf(verdicts, 0, o.calibrate), threshold);
  const auto continual = dinamo::Evaluate(ScoresOf(verdicts, o.calibrate, n_runs),
                                          LabelsOf(verdicts, o.calibrate, n_runs), threshold);
  nlohmann::json report = {{"method", o.method},
                           {"alpha", alpha},
                           {"threshold", threshold},
                           {"calibration_runs", o.calibrate},
                           {"labels", o.labels},
                           {"label_delay", o.label_delay},
                           {"labels_used", result.labels_used},
                           {"continual_runs", n_runs - o.calibrate},
                           {"historical", MetricsJson(historical)},
                           {"continual", MetricsJson(continual)}};
  if (o.method != "ewma") {
    report["note"] = "alpha is a parameter of the EWMA only: --calibrate chose the threshold";
    report["threads"] = o.threads;
  }
  if (!o.report.empty()) {
    std::ofstream r(o.report);
    r << report.dump(2) << '\n';
    if (!r) throw std::runtime_error(o.report + ": write failed");
  }
  std::printf(
      "%s: %zu runs, labels %s, alpha %.6g, threshold %.6g, continual balanced accuracy %.4f, "
      "labels used %zu\n",
      o.input.c_str(), n_runs, o.labels.c_str(), alpha, threshold, continual.balanced_accuracy,
      result.labels_used);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Replay a recorded sequence of histograms through a DINAMO template"};
  app.add_option("input", o.input, "replay CSV: run,label,c0,c1,...")->required();
  app.add_option("--out", o.out, "verdicts CSV to write")->required();
  app.add_option("--report", o.report, "metrics JSON to write");
  app.add_option("--method", o.method, "template method")->check(
      CLI::IsMember({"ewma", "transformer"}));
  app.add_option("--alpha", o.alpha, "EWMA memory in [0, 1]")->check(CLI::Range(0.0, 1.0));
  app.add_option("--threshold", o.threshold, "alarm threshold on ln(chi2/B)");
  app.add_option("--calibrate", o.calibrate, "choose alpha and threshold on the first N runs");
  app.add_option("--labels", o.labels, "label policy after the calibration runs")
      ->check(CLI::IsMember({"oracle", "review", "none"}));
  app.add_option("--label-delay", o.label_delay, "runs before a reviewed label arrives");
  app.add_option("--threads", o.threads, "libtorch intra-op threads (transformer)")
      ->check(CLI::Range(1, 256));
  auto* debias = app.add_flag("--debias", o.debias, "statistical debiasing by resampling");
  app.add_option("--resamples", o.resamples, "resamples for --debias")
      ->check(CLI::Range(1, 1000000))->needs(debias);
  app.add_option("--seed", o.seed, "generator seed for --debias")->needs(debias);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  try {
    return Run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dinamo-replay: %s\n", e.what());
    return kExitUsage;
  }
}
