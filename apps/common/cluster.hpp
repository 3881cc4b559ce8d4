// The start of every nerve program that runs for one node of a cluster file: the file loaded,
// the node found, or "PROGRAM: config error: ..." and exit code 2.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "log.hpp"
#include "nerve/config.hpp"

namespace nerve::app {

// nullopt: `cluster` holds the file and `self` its node `id`; otherwise the exit code.
inline std::optional<int> load_node(const std::string& path, int id, std::string_view program,
                                    config::Cluster& cluster, const config::Node*& self) {
  try {
    cluster = config::load_file(path);
    self = &cluster.node(static_cast<std::uint16_t>(id));
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "{}: config error: {}\n", program, e.what());
    return 2;
  }
  return std::nullopt;
}

// The level a --log-level value names (debug, info, warn, error).
inline Level level_named(std::string_view name) {
  return name == "debug" ? Level::kDebug : name == "warn" ? Level::kWarn : name == "error" ? Level::kError : Level::kInfo;
}

}  // namespace nerve::app
