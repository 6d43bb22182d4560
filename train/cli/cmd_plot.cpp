// `hymba plot`: PNG curves of a run's metrics.jsonl, drawn by gnuplot.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "core/error.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/metrics.h"

namespace hymba::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: hymba plot RUN_DIR [--gnuplot PATH]\n"
    "\n"
    "Reads RUN_DIR/metrics.jsonl and writes RUN_DIR/loss.png (train loss per step and val loss\n"
    "at each eval) and RUN_DIR/lr.png (learning rate per step). Needs gnuplot (Debian:\n"
    "apt-get install gnuplot-nox); uses its pngcairo terminal when present, else png.\n"
    "  --gnuplot PATH    the gnuplot executable (default: gnuplot on PATH)\n";

std::string find_on_path(const std::string& exe) {
  if (exe.find('/') != std::string::npos) return fs::exists(exe) ? exe : "";
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) continue;
    fs::path p = fs::path(dir) / exe;
    std::error_code ec;
    if (fs::exists(p, ec) && access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

// Single quotes for the shell and for gnuplot strings.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string run_capture(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

int run_plot(const std::vector<std::string>& argv) {
  Args a(argv, {{"gnuplot"}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (a.positionals().size() != 1) throw ArgError("expected exactly one RUN_DIR");
  const fs::path dir = a.positionals()[0];
  const fs::path metrics = dir / "metrics.jsonl";
  if (!fs::exists(metrics)) HYMBA_USER_ERROR(metrics.string(), ": no metrics file (is ", dir.string(), " a run directory?)");
  const std::string gp = find_on_path(a.get_or("gnuplot", "gnuplot"));
  if (gp.empty())
    HYMBA_USER_ERROR("gnuplot not found (looked for '", a.get_or("gnuplot", "gnuplot"),
                     "'); install it (apt-get install gnuplot-nox) or pass --gnuplot PATH");

  // Data files for gnuplot, next to the plots (columns: step value).
  const fs::path train_dat = dir / "plot_train.dat", eval_dat = dir / "plot_eval.dat";
  size_t n_train = 0, n_eval = 0;
  {
    std::ofstream tr(train_dat), ev(eval_dat);
    tr.precision(10);
    ev.precision(10);
    for (const auto& r : train::read_metrics(metrics.string())) {
      const std::string type = r.value("type", "");
      if (!r.contains("step")) continue;
      if (type == "train" && r.contains("loss") && r["loss"].is_number() && r.contains("lr")) {
        tr << r["step"].get<int64_t>() << " " << r["loss"].get<double>() << " " << r["lr"].get<double>() << "\n";
        ++n_train;
      } else if (type == "eval" && r.contains("val_loss") && r["val_loss"].is_number()) {
        ev << r["step"].get<int64_t>() << " " << r["val_loss"].get<double>() << "\n";
        ++n_eval;
      }
    }
  }
  if (n_train == 0) HYMBA_USER_ERROR(metrics.string(), ": no training records to plot");

  const bool cairo = run_capture(quoted(gp) + " -e 'set terminal' 2>&1").find("pngcairo") != std::string::npos;
  const std::string term = cairo ? "pngcairo size 1000,600" : "png size 1000,600";
  std::ostringstream s;
  s << "set terminal " << term << "\n"
    << "set grid\nset key top right\nset xlabel 'step'\n"
    << "set output " << quoted((dir / "loss.png").string()) << "\n"
    << "set ylabel 'loss (nats/token)'\nset title 'loss'\n"
    << "plot " << quoted(train_dat.string()) << " using 1:2 with lines title 'train'";
  if (n_eval > 0) s << ", " << quoted(eval_dat.string()) << " using 1:2 with linespoints pt 7 title 'val'";
  s << "\nset output " << quoted((dir / "lr.png").string()) << "\n"
    << "set ylabel 'learning rate'\nset title 'learning rate'\nset format y '%.1e'\n"
    << "plot " << quoted(train_dat.string()) << " using 1:3 with lines title 'lr'\n"
    << "set output\n";

  FILE* p = popen((quoted(gp) + " 2>&1").c_str(), "w");
  if (!p) HYMBA_USER_ERROR("cannot run ", gp);
  const std::string script = s.str();
  std::fwrite(script.data(), 1, script.size(), p);
  int rc = pclose(p);
  std::error_code ec;
  fs::remove(train_dat, ec);
  fs::remove(eval_dat, ec);
  if (rc != 0) HYMBA_USER_ERROR("gnuplot failed (exit status ", rc, ") drawing ", dir.string());
  std::printf("wrote %s and %s\n", (dir / "loss.png").c_str(), (dir / "lr.png").c_str());
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("plot", "draw loss and lr curves of a run (PNG, via gnuplot)", run_plot);

}  // namespace hymba::cli
