#pragma once

// Snapshots of the daemon's state on disk: written atomically (temporary file, fsync, rename,
// fsync of the directory) with a header carrying a magic, the format version, the payload
// length and a CRC-32, in two generations so that a damaged newest file falls back to the
// previous one. Nothing is ever half-loaded.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dinamo/v1/state.pb.h"

namespace dinamo::daemon {

inline constexpr std::uint32_t kSnapshotFormatVersion = 1;

// Frames a serialised snapshot (header + payload) and checks such a frame.
std::string EncodeSnapshotFile(std::string_view payload);
// The payload (a view into `bytes`), or nothing with `why` set ("checksum mismatch",
// "truncated: ...").
std::optional<std::string_view> DecodeSnapshotFile(std::string_view bytes, std::string& why);

struct LoadedSnapshot {
  // Parsed on an arena (100 000 templates are a few hundred thousand messages): freeing it is
  // one call, not one per message.
  std::shared_ptr<const v1::Snapshot> snapshot;
  std::string file;  // which generation it came from
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string directory);

  const std::string& current_path() const { return current_; }
  const std::string& previous_path() const { return previous_; }

  // Says why a decoded snapshot cannot be used (its content is inconsistent), or nothing.
  using Accept = std::function<std::optional<std::string>(const v1::Snapshot&)>;

  // The newest generation that decodes and that `accept` takes (the caller restores from it
  // inside `accept`). Every refused file is logged at error level with its path and why;
  // `problems` counts them. Nothing when neither is usable (or none exists).
  std::optional<LoadedSnapshot> Load(int& problems, const Accept& accept = nullptr);

  // Writes `snapshot` as the new current generation; the old current one (when it was valid)
  // becomes the previous. Returns the reason on failure; the files on disk stay consistent.
  std::optional<std::string> Write(const v1::Snapshot& snapshot);

 private:
  std::shared_ptr<const v1::Snapshot> ReadOne(const std::string& path, bool& existed,
                                              std::string& why);

  std::string directory_;
  std::string current_;
  std::string previous_;
  std::string temporary_;
  bool current_valid_ = false;  // the current file is one we can fall back to
};

}  // namespace dinamo::daemon
