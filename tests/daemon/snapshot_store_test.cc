#include "snapshot_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include <unistd.h>

namespace dinamo::daemon {
namespace {

class SnapshotStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dinamod_snapshot_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static v1::Snapshot Make(std::uint64_t sequence) {
    v1::Snapshot s;
    s.set_format_version(kSnapshotFormatVersion);
    s.set_last_sequence(sequence);
    v1::HistogramState* h = s.add_histograms();
    h->set_name("A/h");
    h->mutable_ewma()->add_weight(0.1 + 1e-17 * static_cast<double>(sequence));
    return s;
  }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  static void Overwrite(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::filesystem::path dir_;
};

TEST_F(SnapshotStoreTest, WrittenSnapshotLoadsBackEqual) {
  SnapshotStore store(dir_.string());
  ASSERT_FALSE(store.Write(Make(7)));
  int problems = -1;
  const auto loaded = SnapshotStore(dir_.string()).Load(problems);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(problems, 0);
  EXPECT_EQ(loaded->file, store.current_path());
  EXPECT_EQ(loaded->snapshot->SerializeAsString(), Make(7).SerializeAsString());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "snapshot.pb.tmp"));
}

TEST_F(SnapshotStoreTest, TwoGenerationsAreKept) {
  SnapshotStore store(dir_.string());
  ASSERT_FALSE(store.Write(Make(1)));
  ASSERT_FALSE(store.Write(Make(2)));
  EXPECT_TRUE(std::filesystem::exists(store.previous_path()));
  int problems = 0;
  EXPECT_EQ(SnapshotStore(dir_.string()).Load(problems)->snapshot->last_sequence(), 2u);
}

TEST_F(SnapshotStoreTest, CorruptNewestFallsBackToThePrevious) {
  SnapshotStore store(dir_.string());
  ASSERT_FALSE(store.Write(Make(1)));
  ASSERT_FALSE(store.Write(Make(2)));
  std::string bytes = Read(store.current_path());
  bytes[bytes.size() - 3] ^= 0x40;
  Overwrite(store.current_path(), bytes);
  int problems = 0;
  SnapshotStore reader(dir_.string());
  const auto loaded = reader.Load(problems);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(problems, 1);
  EXPECT_EQ(loaded->file, store.previous_path());
  EXPECT_EQ(loaded->snapshot->last_sequence(), 1u);

  // The damaged file is not rotated over the good one on the next write.
  ASSERT_FALSE(reader.Write(Make(3)));
  EXPECT_EQ(SnapshotStore(dir_.string()).Load(problems)->snapshot->last_sequence(), 3u);
  std::string why;
  const std::string previous = Read(store.previous_path());
  const auto prev = DecodeSnapshotFile(previous, why);
  ASSERT_TRUE(prev) << why;
}

TEST_F(SnapshotStoreTest, SnapshotTheCallerRefusesFallsBackToThePrevious) {
  SnapshotStore store(dir_.string());
  ASSERT_FALSE(store.Write(Make(1)));
  ASSERT_FALSE(store.Write(Make(2)));
  int problems = 0;
  const auto loaded = SnapshotStore(dir_.string()).Load(problems, [](const v1::Snapshot& s) {
    return s.last_sequence() == 2 ? std::optional<std::string>("inconsistent") : std::nullopt;
  });
  ASSERT_TRUE(loaded);
  EXPECT_EQ(problems, 1);
  EXPECT_EQ(loaded->snapshot->last_sequence(), 1u);
}

TEST_F(SnapshotStoreTest, TruncatedFileIsRefused) {
  SnapshotStore store(dir_.string());
  ASSERT_FALSE(store.Write(Make(1)));
  const std::string bytes = Read(store.current_path());
  Overwrite(store.current_path(), bytes.substr(0, bytes.size() - 1));
  int problems = 0;
  EXPECT_FALSE(SnapshotStore(dir_.string()).Load(problems));
  EXPECT_EQ(problems, 1);
}

TEST_F(SnapshotStoreTest, NoFilesIsNotAProblem) {
  int problems = -1;
  EXPECT_FALSE(SnapshotStore(dir_.string()).Load(problems));
  EXPECT_EQ(problems, 0);
}

TEST(SnapshotFile, HeaderIsChecked) {
  const std::string framed = EncodeSnapshotFile("payload");
  std::string why;
  EXPECT_EQ(DecodeSnapshotFile(framed, why), "payload");
  EXPECT_FALSE(DecodeSnapshotFile("short", why));
  EXPECT_NE(why.find("truncated"), std::string::npos);
  std::string bad_magic = framed;
  bad_magic[0] = 'X';
  EXPECT_FALSE(DecodeSnapshotFile(bad_magic, why));
  EXPECT_NE(why.find("magic"), std::string::npos);
  std::string bad_version = framed;
  bad_version[8] = 9;
  EXPECT_FALSE(DecodeSnapshotFile(bad_version, why));
  EXPECT_NE(why.find("version"), std::string::npos);
  std::string bad_crc = framed;
  bad_crc.back() ^= 1;
  EXPECT_FALSE(DecodeSnapshotFile(bad_crc, why));
  EXPECT_EQ(why, "checksum mismatch");
}

}  // namespace
}  // namespace dinamo::daemon
