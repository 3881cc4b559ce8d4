// Command-line parsing shared by nerve's programs: CLI11's --help exits 0, and any other parse
// error is a clear message and exit code 2 (bad arguments), whatever CLI11's own code would be.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <optional>
#include <string_view>

namespace nerve::app {

// nullopt: parsed, carry on; otherwise the exit code to return from main.
inline std::optional<int> parse_cli(CLI::App& cli, int argc, char** argv, std::string_view program) {
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}: {}\nRun with --help for usage.\n", program, e.what());
    return 2;
  }
  return std::nullopt;
}

}  // namespace nerve::app
