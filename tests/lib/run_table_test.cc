#include "dinamo/run_table.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace dinamo {
namespace {

RunTable Parse(const std::string& text) {
  std::istringstream in(text);
  return ParseRunTable(in, "runs.csv");
}

// The error message, or "" when the text parses.
std::string ErrorOf(const std::string& text) {
  try {
    Parse(text);
  } catch (const RunTableError& e) {
    return e.what();
  }
  return "";
}

TEST(RunTable, ParsesLabelsCountsAndRuns) {
  const RunTable t = Parse("run,label,c0,c1\n0,0,1,2\n1,1,3.5,0\n2,,0,0\n3,-1,1e3,7\n");

  ASSERT_EQ(t.runs.size(), 4u);
  EXPECT_EQ(t.bins(), 2u);
  EXPECT_EQ(t.runs[1].label, Label::kBad);
  EXPECT_EQ(t.runs[2].label, Label::kUnknown);
  EXPECT_EQ(t.runs[3].label, Label::kUnknown);
  EXPECT_DOUBLE_EQ(t.runs[3].counts[0], 1000.0);
}

TEST(RunTable, WriteThenParseGivesTheSameTable) {
  const RunTable t = Parse("run,label,c0,c1\n4,0,0.1,2\n9,1,3.25,0\n");
  std::ostringstream out;

  WriteRunTable(t, out);

  const RunTable back = Parse(out.str());
  ASSERT_EQ(back.runs.size(), 2u);
  EXPECT_EQ(back.runs[1].run, 9);
  EXPECT_EQ(back.runs[0].counts, t.runs[0].counts);
  EXPECT_EQ(back.runs[1].label, Label::kBad);
}

TEST(RunTable, RaggedRowNamesLineAndColumnCount) {
  EXPECT_EQ(ErrorOf("run,label,c0,c1\n0,0,1,2\n1,0,1\n"),
            "runs.csv:3: expected 4 columns as in the header, got 3");
}

TEST(RunTable, NonNumberNamesColumn) {
  EXPECT_EQ(ErrorOf("run,label,c0,c1\n0,0,1,x2\n"), "runs.csv:2: column c1: 'x2' is not a number");
}

TEST(RunTable, NegativeNanAndInfiniteCountsAreRefused) {
  EXPECT_EQ(ErrorOf("run,label,c0\n0,0,-3\n"), "runs.csv:2: column c0: count -3 is negative");
  EXPECT_EQ(ErrorOf("run,label,c0\n0,0,nan\n"), "runs.csv:2: column c0: count is NaN");
  EXPECT_EQ(ErrorOf("run,label,c0\n0,0,inf\n"), "runs.csv:2: column c0: count is infinite");
}

TEST(RunTable, LabelOutsideZeroOneMinusOneIsRefused) {
  EXPECT_EQ(ErrorOf("run,label,c0\n0,2,1\n"),
            "runs.csv:2: column label: '2' is not 0, 1, -1 or empty");
}

TEST(RunTable, RunsThatDoNotIncreaseAreRefused) {
  EXPECT_EQ(ErrorOf("run,label,c0\n5,0,1\n5,0,1\n"),
            "runs.csv:3: run 5 does not increase (previous run 5)");
}

TEST(RunTable, FileWithoutRowsOrHeaderIsRefused) {
  EXPECT_EQ(ErrorOf("run,label,c0\n"), "runs.csv:1: no rows after the header");
  EXPECT_EQ(ErrorOf(""), "runs.csv:1: file is empty (no header)");
  EXPECT_NE(ErrorOf("bins,c0\n1,2\n").find("header must be"), std::string::npos);
}

TEST(RunTable, MissingFileIsNamed) {
  EXPECT_THROW(ReadRunTable("/nonexistent/runs.csv"), RunTableError);
}

}  // namespace
}  // namespace dinamo
