#pragma once

// Readers for the reference figures in tests/data (produced by the paper's implementation).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dinamo::testing {

inline std::string DataPath(const std::string& file) {
  return std::string(DINAMO_TEST_DATA) + "/" + file;
}

inline std::vector<std::vector<double>> ReadNumericCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream fields(line);
    std::string f;
    while (std::getline(fields, f, ',')) row.push_back(std::stod(f));
    rows.push_back(std::move(row));
  }
  return rows;
}

// run -> chi2 from s_alpha0.5_<seed>.csv
inline std::map<std::int64_t, double> ReadGoldenChi2(const std::string& file) {
  std::map<std::int64_t, double> chi2;
  for (const auto& r : ReadNumericCsv(DataPath(file))) chi2[static_cast<std::int64_t>(r[0])] = r[1];
  return chi2;
}

struct GoldenBin {
  double mu, sigma_mu, pull;
};

// run -> per-bin template, uncertainty and pull from s_alpha0.5_<seed>_bins.csv
inline std::map<std::int64_t, std::vector<GoldenBin>> ReadGoldenBins(const std::string& file) {
  std::map<std::int64_t, std::vector<GoldenBin>> bins;
  for (const auto& r : ReadNumericCsv(DataPath(file))) {
    auto& v = bins[static_cast<std::int64_t>(r[0])];
    const auto b = static_cast<std::size_t>(r[1]);
    if (v.size() <= b) v.resize(b + 1);
    v[b] = {r[2], r[3], r[4]};
  }
  return bins;
}

inline double RelativeError(double got, double want) {
  const double scale = std::max(std::abs(want), 1e-300);
  return std::abs(got - want) / scale;
}

}  // namespace dinamo::testing
