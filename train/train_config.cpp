#include "train/train_config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/device.h"
#include "core/error.h"
#include "train/optimizer.h"

namespace hymba::train {

namespace fs = std::filesystem;

namespace {

// Typed reads out of YAML nodes; every problem names the file, the line and the dotted key,
// or the --set flag that put the value there.
class Reader {
 public:
  Reader(std::string file, std::set<std::string> overridden)
      : file_(std::move(file)), overridden_(std::move(overridden)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    std::ostringstream os;
    if (overridden_.count(key)) {
      os << "--set " << key << ": " << what;
    } else {
      os << file_;
      int line = at.IsDefined() ? at.Mark().line : -1;
      if (line >= 0) os << ":" << line + 1;
      os << ": key '" << key << "': " << what;
    }
    throw UserError(os.str());
  }

  static std::string text(const YAML::Node& n) {
    if (n.IsScalar()) return "'" + n.Scalar() + "'";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a map";
    return "null";
  }

  void check_keys(const YAML::Node& map, const std::string& prefix, const std::set<std::string>& allowed) const {
    std::set<std::string> seen;
    for (const auto& kv : map) {
      std::string k = kv.first.as<std::string>();
      if (!seen.insert(k).second) fail(kv.first, prefix + k, "given twice");
      if (!allowed.count(k)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(kv.first, prefix + k, "unknown key (expected one of: " + list + ")");
      }
    }
  }

  YAML::Node section(const YAML::Node& root, const std::string& name, bool required) const {
    YAML::Node n = root[name];
    if (!n) {
      if (required) fail(root, name, "missing section");
      return YAML::Node();  // null: callers treat it as an empty map
    }
    if (!n.IsMap()) fail(n, name, "expected a map, got " + text(n));
    return n;
  }

  int64_t get_int(const YAML::Node& m, const std::string& sec, const std::string& k, int64_t def, int64_t min) const {
    YAML::Node n = m[k];
    if (!n) return def;
    int64_t v = 0;
    std::string key = sec + "." + k;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) fail(n, key, "expected an integer, got " + text(n));
    if (v < min) fail(n, key, "expected an integer >= " + std::to_string(min) + ", got " + n.Scalar());
    return v;
  }
  double get_double(const YAML::Node& m, const std::string& sec, const std::string& k, double def) const {
    YAML::Node n = m[k];
    if (!n) return def;
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v))
      fail(n, sec + "." + k, "expected a number, got " + text(n));
    return v;
  }
  bool get_bool(const YAML::Node& m, const std::string& sec, const std::string& k, bool def) const {
    YAML::Node n = m[k];
    if (!n) return def;
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v))
      fail(n, sec + "." + k, "expected true or false, got " + text(n));
    return v;
  }
  std::string get_string(const YAML::Node& m, const std::string& sec, const std::string& k,
                         const std::string& def) const {
    YAML::Node n = m[k];
    if (!n) return def;
    if (!n.IsScalar()) fail(n, sec + "." + k, "expected a string, got " + text(n));
    return n.Scalar();
  }
  std::string get_choice(const YAML::Node& m, const std::string& sec, const std::string& k, const std::string& def,
                         const std::vector<std::string>& choices) const {
    std::string s = get_string(m, sec, k, def);
    if (std::find(choices.begin(), choices.end(), s) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : " or ") + c;
      fail(m[k], sec + "." + k, "expected " + list + ", got '" + s + "'");
    }
    return s;
  }
  std::vector<std::string> get_strings(const YAML::Node& m, const std::string& sec, const std::string& k) const {
    YAML::Node n = m[k];
    std::vector<std::string> out;
    if (!n.IsSequence()) fail(n, sec + "." + k, "expected a list of strings, got " + text(n));
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar()) fail(n[i], sec + "." + k + "[" + std::to_string(i) + "]", "expected a string");
      out.push_back(n[i].Scalar());
    }
    return out;
  }
  void require(bool ok, const YAML::Node& m, const std::string& sec, const std::string& k,
               const std::string& what) const {
    if (!ok) fail(m[k] ? m[k] : m, sec + "." + k, what);
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::set<std::string> overridden_;
};

// Relative to the working directory when that exists, else to the config file's folder.
std::string resolve_path(const std::string& p, const std::string& config_file) {
  if (p.empty() || fs::path(p).is_absolute() || fs::exists(p)) return p;
  fs::path dir = fs::path(config_file).parent_path();
  if (dir.empty()) return p;
  fs::path alt = dir / p;
  return fs::exists(alt) ? alt.lexically_normal().string() : p;
}

YAML::Node load_yaml_file(const std::string& path) {
  if (!fs::exists(path)) HYMBA_USER_ERROR(path, ": file does not exist");
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::ParserException& e) {
    HYMBA_USER_ERROR(path, ":", e.mark.line + 1, ": invalid YAML: ", e.msg);
  } catch (const YAML::Exception& e) {
    HYMBA_USER_ERROR(path, ": cannot read YAML: ", e.what());
  }
}

void apply_override(YAML::Node root, const std::string& spec) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0)
    HYMBA_USER_ERROR("--set ", spec, ": expected key=value (e.g. --set optim.lr=1e-3)");
  std::string key = spec.substr(0, eq), value = spec.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) {
    if (p.empty()) HYMBA_USER_ERROR("--set ", spec, ": empty component in key '", key, "'");
    parts.push_back(p);
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = cur[parts[i]];
    if (next && !next.IsMap())
      HYMBA_USER_ERROR("--set ", spec, ": '", parts[i], "' is not a section (it holds a value)");
    if (!next) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    }
    cur.reset(next);
  }
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    HYMBA_USER_ERROR("--set ", spec, ": invalid value: ", e.what());
  }
  cur[parts.back()] = v;
}

TrainConfig parse(YAML::Node root, const std::string& file, const std::vector<std::string>& overrides) {
  if (!root.IsMap()) HYMBA_USER_ERROR(file, ": expected a map with sections model, data, optim, schedule, run");
  TrainConfig cfg;
  cfg.source = file;

  // A model given by path is read into the tree first, so that --set model.* works on it.
  std::string model_file = file;
  if (YAML::Node m = root["model"]; m && m.IsScalar()) {
    cfg.model_source = resolve_path(m.Scalar(), file);
    model_file = cfg.model_source;
    root["model"] = load_yaml_file(cfg.model_source);
  }
  std::set<std::string> overridden;
  for (const auto& o : overrides) {
    apply_override(root, o);
    overridden.insert(o.substr(0, o.find('=')));
  }
  Reader r(file, overridden);
  r.check_keys(root, "", {"model", "data", "optim", "schedule", "run"});

  YAML::Node model = root["model"];
  if (!model) r.fail(root, "model", "missing section (a model config path or an inline map)");
  if (!model.IsMap()) r.fail(model, "model", "expected a model config path or a map, got " + Reader::text(model));
  try {
    cfg.model = parse_model_config(model, model_file);
  } catch (const UserError& e) {
    bool model_override = std::any_of(overrides.begin(), overrides.end(),
                                      [](const std::string& o) { return o.rfind("model.", 0) == 0; });
    if (!model_override) throw;
    throw UserError(std::string(e.what()) + " (after --set model.* overrides)");
  }

  // ---- data ----
  YAML::Node d = r.section(root, "data", true);
  r.check_keys(d, "data.", {"train", "val", "train_split", "val_split", "mode", "seq_len"});
  cfg.data.train = r.get_string(d, "data", "train", "");
  r.require(!cfg.data.train.empty(), d, "data", "train", "missing (a prepared data directory or .h5 shard)");
  cfg.data.train = resolve_path(cfg.data.train, file);
  bool train_is_dir = fs::is_directory(cfg.data.train);
  cfg.data.val = resolve_path(r.get_string(d, "data", "val", train_is_dir ? cfg.data.train : ""), file);
  cfg.data.train_split = r.get_string(d, "data", "train_split", "train");
  cfg.data.val_split = r.get_string(d, "data", "val_split", "val");
  cfg.data.mode = r.get_choice(d, "data", "mode", "random", {"random", "packed"});
  cfg.data.seq_len = r.get_int(d, "data", "seq_len", 256, 1);

  // ---- optim ----
  // An absent optional section reads as an empty map.
  YAML::Node o = r.section(root, "optim", false);
  if (o.IsNull()) o.reset(YAML::Node(YAML::NodeType::Map));
  r.check_keys(o, "optim.", {"lr", "beta1", "beta2", "eps", "weight_decay", "no_decay", "grad_clip", "zero"});
  cfg.optim.lr = r.get_double(o, "optim", "lr", cfg.optim.lr);
  r.require(cfg.optim.lr > 0, o, "optim", "lr", "expected a number > 0");
  cfg.optim.beta1 = r.get_double(o, "optim", "beta1", cfg.optim.beta1);
  r.require(cfg.optim.beta1 >= 0 && cfg.optim.beta1 < 1, o, "optim", "beta1", "expected a number in [0, 1)");
  cfg.optim.beta2 = r.get_double(o, "optim", "beta2", cfg.optim.beta2);
  r.require(cfg.optim.beta2 >= 0 && cfg.optim.beta2 < 1, o, "optim", "beta2", "expected a number in [0, 1)");
  cfg.optim.eps = r.get_double(o, "optim", "eps", cfg.optim.eps);
  r.require(cfg.optim.eps > 0, o, "optim", "eps", "expected a number > 0");
  cfg.optim.weight_decay = r.get_double(o, "optim", "weight_decay", cfg.optim.weight_decay);
  r.require(cfg.optim.weight_decay >= 0, o, "optim", "weight_decay", "expected a number >= 0");
  cfg.optim.no_decay = o["no_decay"] ? r.get_strings(o, "optim", "no_decay") : default_no_decay_patterns();
  cfg.optim.grad_clip = r.get_double(o, "optim", "grad_clip", cfg.optim.grad_clip);
  cfg.optim.zero = r.get_int(o, "optim", "zero", cfg.optim.zero, 0);
  r.require(cfg.optim.zero <= 1, o, "optim", "zero", "expected 0 (off) or 1 (ZeRO-1: optimizer state sharded)");

  // ---- run (before schedule: total_steps defaults to run.steps) ----
  YAML::Node u = r.section(root, "run", true);
  r.check_keys(u, "run.", {"steps", "global_batch_tokens", "global_batch", "micro_batch", "seed", "eval_every",
                           "eval_batches", "ckpt_every", "keep_last", "log_every", "out_dir", "device",
                           "precision", "peak_tflops", "max_bad_steps", "recompute", "ddp_bucket_mb"});
  RunSection& run = cfg.run;
  run.steps = r.get_int(u, "run", "steps", run.steps, 1);
  bool has_tokens = bool(u["global_batch_tokens"]), has_batch = bool(u["global_batch"]);
  if (has_tokens && has_batch) r.fail(u["global_batch"], "run.global_batch", "give global_batch or global_batch_tokens, not both");
  if (!has_tokens && !has_batch) r.fail(u, "run", "missing run.global_batch_tokens (or run.global_batch)");
  if (has_tokens) {
    run.global_batch_tokens = r.get_int(u, "run", "global_batch_tokens", 0, 1);
    r.require(run.global_batch_tokens % cfg.data.seq_len == 0, u, "run", "global_batch_tokens",
              "expected a multiple of data.seq_len (" + std::to_string(cfg.data.seq_len) + "), got " +
                  std::to_string(run.global_batch_tokens));
    run.global_batch = run.global_batch_tokens / cfg.data.seq_len;
  } else {
    run.global_batch = r.get_int(u, "run", "global_batch", 0, 1);
    run.global_batch_tokens = run.global_batch * cfg.data.seq_len;
  }
  run.micro_batch = r.get_int(u, "run", "micro_batch", run.global_batch, 1);
  r.require(run.global_batch % run.micro_batch == 0, u, "run", "micro_batch",
            "expected a divisor of the global batch (" + std::to_string(run.global_batch) + " samples), got " +
                std::to_string(run.micro_batch));
  run.seed = uint64_t(r.get_int(u, "run", "seed", 0, 0));
  run.eval_every = r.get_int(u, "run", "eval_every", 0, 0);
  run.eval_batches = r.get_int(u, "run", "eval_batches", 0, 0);
  run.ckpt_every = r.get_int(u, "run", "ckpt_every", 0, 0);
  run.keep_last = r.get_int(u, "run", "keep_last", run.keep_last, 0);
  run.log_every = r.get_int(u, "run", "log_every", run.log_every, 1);
  run.out_dir = r.get_string(u, "run", "out_dir", run.out_dir);
  run.device = r.get_choice(u, "run", "device", "cpu", {"cpu", "cuda"});
  if (run.device == "cuda" && !built_with_cuda())
    r.fail(u["device"], "run.device",
           "cuda needs a build with CUDA (configure with -DHYMBA_CUDA=ON); this one is CPU-only");
  run.precision = r.get_choice(u, "run", "precision", run.device == "cuda" ? "bf16" : "fp32", {"bf16", "fp32"});
  if (run.precision == "bf16" && run.device != "cuda")
    r.fail(u["precision"], "run.precision", "bf16 needs run.device: cuda (the CPU kernels compute in fp32); use fp32");
  run.peak_tflops = r.get_double(u, "run", "peak_tflops", 0.0);
  r.require(run.peak_tflops >= 0, u, "run", "peak_tflops", "expected a number >= 0 (0: look the GPU up by name)");
  run.max_bad_steps = r.get_int(u, "run", "max_bad_steps", run.max_bad_steps, 1);
  run.recompute = r.get_bool(u, "run", "recompute", run.recompute);
  run.ddp_bucket_mb = r.get_double(u, "run", "ddp_bucket_mb", run.ddp_bucket_mb);
  r.require(run.ddp_bucket_mb > 0, u, "run", "ddp_bucket_mb", "expected a number > 0 (MiB per gradient bucket)");

  // ---- schedule ----
  YAML::Node s = r.section(root, "schedule", false);
  if (s.IsNull()) s.reset(YAML::Node(YAML::NodeType::Map));
  r.check_keys(s, "schedule.", {"kind", "warmup_steps", "min_lr", "total_steps", "decay_fraction", "decay_shape"});
  cfg.schedule.kind = r.get_choice(s, "schedule", "kind", cfg.schedule.kind, {"constant", "cosine", "wsd"});
  cfg.schedule.warmup_steps = r.get_int(s, "schedule", "warmup_steps", 0, 0);
  cfg.schedule.min_lr = r.get_double(s, "schedule", "min_lr", cfg.schedule.min_lr);
  cfg.schedule.total_steps = r.get_int(s, "schedule", "total_steps", 0, 0);
  if (cfg.schedule.total_steps == 0) cfg.schedule.total_steps = run.steps;
  cfg.schedule.decay_fraction = r.get_double(s, "schedule", "decay_fraction", cfg.schedule.decay_fraction);
  cfg.schedule.decay_shape =
      r.get_choice(s, "schedule", "decay_shape", cfg.schedule.decay_shape, {"linear", "cosine", "1-sqrt"});
  try {
    make_lr_schedule(cfg.schedule_params());
  } catch (const UserError& e) {
    HYMBA_USER_ERROR(file, ": ", e.what());
  }
  return cfg;
}

}  // namespace

ScheduleParams TrainConfig::schedule_params() const {
  ScheduleParams p;
  p.kind = schedule.kind;
  p.peak_lr = optim.lr;
  p.min_lr = schedule.min_lr;
  p.warmup_steps = schedule.warmup_steps;
  p.total_steps = schedule.total_steps;
  p.decay_fraction = schedule.decay_fraction;
  p.decay_shape = schedule.decay_shape;
  return p;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse(load_yaml_file(path), path, overrides);
}

TrainConfig parse_train_config_string(const std::string& yaml, const std::string& file,
                                      const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    HYMBA_USER_ERROR(file, ":", e.mark.line + 1, ": invalid YAML: ", e.msg);
  }
  return parse(root, file, overrides);
}

namespace {
// Shortest text that reads back as the same double ("0.003", not "0.0030000000000000001").
std::string num(double v) { return fmt::format("{}", v); }
}  // namespace

std::string dump_train_config(const TrainConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "model" << YAML::Value << YAML::Load(dump_model_config(c.model));
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "train" << YAML::Value << c.data.train;
  e << YAML::Key << "val" << YAML::Value << c.data.val;
  e << YAML::Key << "train_split" << YAML::Value << c.data.train_split;
  e << YAML::Key << "val_split" << YAML::Value << c.data.val_split;
  e << YAML::Key << "mode" << YAML::Value << c.data.mode;
  e << YAML::Key << "seq_len" << YAML::Value << c.data.seq_len;
  e << YAML::EndMap;
  e << YAML::Key << "optim" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "lr" << YAML::Value << num(c.optim.lr);
  e << YAML::Key << "beta1" << YAML::Value << num(c.optim.beta1);
  e << YAML::Key << "beta2" << YAML::Value << num(c.optim.beta2);
  e << YAML::Key << "eps" << YAML::Value << num(c.optim.eps);
  e << YAML::Key << "weight_decay" << YAML::Value << num(c.optim.weight_decay);
  e << YAML::Key << "no_decay" << YAML::Value << YAML::Flow << c.optim.no_decay;
  e << YAML::Key << "grad_clip" << YAML::Value << num(c.optim.grad_clip);
  e << YAML::Key << "zero" << YAML::Value << c.optim.zero;
  e << YAML::EndMap;
  e << YAML::Key << "schedule" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "kind" << YAML::Value << c.schedule.kind;
  e << YAML::Key << "warmup_steps" << YAML::Value << c.schedule.warmup_steps;
  e << YAML::Key << "min_lr" << YAML::Value << num(c.schedule.min_lr);
  e << YAML::Key << "total_steps" << YAML::Value << c.schedule.total_steps;
  e << YAML::Key << "decay_fraction" << YAML::Value << num(c.schedule.decay_fraction);
  e << YAML::Key << "decay_shape" << YAML::Value << c.schedule.decay_shape;
  e << YAML::EndMap;
  e << YAML::Key << "run" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "steps" << YAML::Value << c.run.steps;
  // global_batch alone: it determines global_batch_tokens, and giving both is an error.
  e << YAML::Key << "global_batch" << YAML::Value << c.run.global_batch;
  e << YAML::Key << "micro_batch" << YAML::Value << c.run.micro_batch;
  e << YAML::Key << "seed" << YAML::Value << c.run.seed;
  e << YAML::Key << "eval_every" << YAML::Value << c.run.eval_every;
  e << YAML::Key << "eval_batches" << YAML::Value << c.run.eval_batches;
  e << YAML::Key << "ckpt_every" << YAML::Value << c.run.ckpt_every;
  e << YAML::Key << "keep_last" << YAML::Value << c.run.keep_last;
  e << YAML::Key << "log_every" << YAML::Value << c.run.log_every;
  e << YAML::Key << "out_dir" << YAML::Value << c.run.out_dir;
  e << YAML::Key << "device" << YAML::Value << c.run.device;
  e << YAML::Key << "precision" << YAML::Value << c.run.precision;
  e << YAML::Key << "peak_tflops" << YAML::Value << num(c.run.peak_tflops);
  e << YAML::Key << "max_bad_steps" << YAML::Value << c.run.max_bad_steps;
  e << YAML::Key << "recompute" << YAML::Value << c.run.recompute;
  e << YAML::Key << "ddp_bucket_mb" << YAML::Value << num(c.run.ddp_bucket_mb);
  e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace hymba::train
