#include "snapshot_store.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

namespace dinamo::daemon {
namespace {

// "DINAMOSS" then version (u32), payload length (u64), CRC-32 of the payload (u32); little endian.
constexpr char kMagic[8] = {'D', 'I', 'N', 'A', 'M', 'O', 'S', 'S'};
constexpr std::size_t kHeaderBytes = 8 + 4 + 8 + 4;

void PutLittle(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

std::uint64_t GetLittle(const std::string& in, std::size_t at, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return value;
}

// CRC-32 of IEEE 802.3 (reflected, polynomial 0xEDB88320, init and final xor all ones: the
// value boost::crc_32_type gives), eight bytes per step with eight tables (slicing-by-8):
// restoring a snapshot of 100 000 templates spent most of its time in a bytewise CRC.
using CrcTables = std::array<std::array<std::uint32_t, 256>, 8>;

const CrcTables& Crc32Tables() {
  static const CrcTables tables = [] {
    CrcTables t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) {
        c = (c & 1u) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      }
      t[0][i] = c;
    }
    for (std::size_t s = 1; s < t.size(); ++s) {
      for (std::size_t i = 0; i < 256; ++i) {
        t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
      }
    }
    return t;
  }();
  return tables;
}

std::uint32_t Crc32(const std::string& data) {
  const CrcTables& t = Crc32Tables();
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  std::uint32_t crc = 0xffffffffu;
  const auto word = [](const unsigned char* b) {
    return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
           static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
  };
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t lo = word(p) ^ crc;
    const std::uint32_t hi = word(p + 4);
    crc = t[7][lo & 0xffu] ^ t[6][(lo >> 8) & 0xffu] ^ t[5][(lo >> 16) & 0xffu] ^ t[4][lo >> 24] ^
          t[3][hi & 0xffu] ^ t[2][(hi >> 8) & 0xffu] ^ t[1][(hi >> 16) & 0xffu] ^ t[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) {
    crc = t[0][(crc ^ *p) & 0xffu] ^ (crc >> 8);
  }
  return crc ^ 0xffffffffu;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Writes all of `bytes` to a new file and fsyncs it.
std::optional<std::string> WriteDurably(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Errno("open " + path);
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const std::string why = Errno("write " + path);
      ::close(fd);
      return why;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = Errno("fsync " + path);
    ::close(fd);
    return why;
  }
  if (::close(fd) != 0) {
    return Errno("close " + path);
  }
  return std::nullopt;
}

std::optional<std::string> SyncDirectory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Errno("open " + directory);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) {
    return Errno("fsync " + directory);
  }
  return std::nullopt;
}

}  // namespace

std::string EncodeSnapshotFile(const std::string& payload) {
  std::string out(kMagic, sizeof kMagic);
  PutLittle(out, kSnapshotFormatVersion, 4);
  PutLittle(out, payload.size(), 8);
  PutLittle(out, Crc32(payload), 4);
  out += payload;
  return out;
}

std::optional<std::string> DecodeSnapshotFile(const std::string& bytes, std::string& why) {
  if (bytes.size() < kHeaderBytes) {
    why = "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the header";
    return std::nullopt;
  }
  if (bytes.compare(0, sizeof kMagic, kMagic, sizeof kMagic) != 0) {
    why = "not a dinamod snapshot (bad magic)";
    return std::nullopt;
  }
  const auto version = GetLittle(bytes, 8, 4);
  if (version != kSnapshotFormatVersion) {
    why = "format version " + std::to_string(version) + ", this build reads " +
          std::to_string(kSnapshotFormatVersion);
    return std::nullopt;
  }
  const auto length = GetLittle(bytes, 12, 8);
  if (length != bytes.size() - kHeaderBytes) {
    why = "truncated or padded: header says " + std::to_string(length) +
          " payload bytes, file has " + std::to_string(bytes.size() - kHeaderBytes);
    return std::nullopt;
  }
  std::string payload = bytes.substr(kHeaderBytes);
  if (Crc32(payload) != GetLittle(bytes, 20, 4)) {
    why = "checksum mismatch";
    return std::nullopt;
  }
  return payload;
}

SnapshotStore::SnapshotStore(std::string directory)
    : directory_(std::move(directory)),
      current_(directory_ + "/snapshot.pb"),
      previous_(directory_ + "/snapshot.prev.pb"),
      temporary_(directory_ + "/snapshot.pb.tmp") {}

std::optional<v1::Snapshot> SnapshotStore::ReadOne(const std::string& path, bool& existed,
                                                   std::string& why) {
  std::ifstream in(path, std::ios::binary);
  existed = static_cast<bool>(in);
  if (!existed) {
    return std::nullopt;
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const auto payload = DecodeSnapshotFile(bytes.str(), why);
  if (!payload) {
    return std::nullopt;
  }
  v1::Snapshot snapshot;
  if (!snapshot.ParseFromString(*payload)) {
    why = "checksum holds but the payload is not a dinamo.v1.Snapshot";
    return std::nullopt;
  }
  return snapshot;
}

std::optional<LoadedSnapshot> SnapshotStore::Load(int& problems, const Accept& accept) {
  problems = 0;
  current_valid_ = false;
  for (const std::string& path : {current_, previous_}) {
    bool existed = false;
    std::string why;
    auto snapshot = ReadOne(path, existed, why);
    if (snapshot && accept) {
      if (auto refused = accept(*snapshot)) {
        why = *refused;
        snapshot.reset();
      }
    }
    if (snapshot) {
      current_valid_ = path == current_;
      return LoadedSnapshot{std::move(*snapshot), path};
    }
    if (existed) {
      ++problems;
      spdlog::error("snapshot refused file={} reason=\"{}\"", path, why);
    }
  }
  return std::nullopt;
}

std::optional<std::string> SnapshotStore::Write(const v1::Snapshot& snapshot) {
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (ec) {
    return "cannot create " + directory_ + ": " + ec.message();
  }
  std::string payload;
  if (!snapshot.SerializeToString(&payload)) {
    return "cannot serialise the snapshot";
  }
  if (auto why = WriteDurably(temporary_, EncodeSnapshotFile(payload))) {
    return why;
  }
  // A damaged current file is not worth keeping as the fallback: it is overwritten instead.
  if (current_valid_ && ::rename(current_.c_str(), previous_.c_str()) != 0 && errno != ENOENT) {
    return Errno("rename " + current_ + " to " + previous_);
  }
  if (::rename(temporary_.c_str(), current_.c_str()) != 0) {
    return Errno("rename " + temporary_ + " to " + current_);
  }
  current_valid_ = true;
  return SyncDirectory(directory_);
}

}  // namespace dinamo::daemon
