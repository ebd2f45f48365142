#pragma once

// The replay format of DESIGN.md section 7: a CSV with header `run,label,c0,c1,...`, one row per
// run in time order; label 0 good, 1 bad, empty or -1 unknown.

#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

namespace dinamo {

enum class Label : std::int8_t { kUnknown = -1, kGood = 0, kBad = 1 };

struct RunRecord {
  std::int64_t run = 0;
  Label label = Label::kUnknown;
  std::vector<double> counts;
};

struct RunTable {
  std::vector<RunRecord> runs;
  std::size_t bins() const { return runs.empty() ? 0 : runs.front().counts.size(); }
};

// A problem in an input file, with where it is: "toy.csv:17: column c3: not a number".
class RunTableError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads and validates a whole file. Throws RunTableError naming the file, the line and the
// problem: ragged rows, non-numbers, negative, NaN or infinite counts, a label other than
// 0/1/-1/empty, runs not increasing, no rows.
RunTable ReadRunTable(const std::string& path);
RunTable ParseRunTable(std::istream& in, const std::string& name);

void WriteRunTable(const RunTable& table, std::ostream& out);

// The label as written in the replay format: 0, 1 or -1.
int LabelNumber(Label label);

}  // namespace dinamo
