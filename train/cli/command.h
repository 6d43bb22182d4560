// Subcommand registry for the `hymba` CLI. Each train/cli/cmd_<name>.cpp defines one
// subcommand and registers it with a static HYMBA_REGISTER_COMMAND; main.cpp dispatches.
//
// Conventions every subcommand follows:
//  - `hymba <cmd> --help` prints its usage to stdout and returns 0;
//  - an unknown flag or a missing value prints the usage to stderr and returns 2;
//  - bad input (files, configs) throws hymba::UserError; main prints "error: ..." and returns 1.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace hymba::cli {

struct Command {
  std::string name;
  std::string summary;  // one line, shown by `hymba --help`
  // args excludes the program name and the subcommand name.
  std::function<int(const std::vector<std::string>& args)> run;
};

std::vector<Command>& registry();

struct Registrar {
  explicit Registrar(Command c) { registry().push_back(std::move(c)); }
};

}  // namespace hymba::cli

#define HYMBA_CLI_CONCAT2(a, b) a##b
#define HYMBA_CLI_CONCAT(a, b) HYMBA_CLI_CONCAT2(a, b)
#define HYMBA_REGISTER_COMMAND(name, summary, fn) \
  static ::hymba::cli::Registrar HYMBA_CLI_CONCAT(hymba_cmd_, __LINE__)({name, summary, fn})
