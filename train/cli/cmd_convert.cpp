// `hymba convert`: Hugging Face Hymba checkpoints <-> our HDF5 checkpoints.
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "layers/model_config.h"
#include "train/checkpoint.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/hf_convert.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba convert --from-hf DIR --out CKPT.h5 [--force]\n"
    "       hymba convert --to-hf CKPT.h5 --out DIR [--dtype bf16|f16|f32] [--force]\n"
    "\n"
    "--from-hf: reads DIR/config.json and DIR/model.safetensors (or a sharded\n"
    "  model.safetensors.index.json), e.g. a download of nvidia/Hymba-1.5B-Base, and writes a\n"
    "  checkpoint (f32 weights + the model config) that train/eval/generate can load.\n"
    "  Configs our model cannot compute exactly are refused, naming the config.json key.\n"
    "--to-hf: writes DIR/config.json and DIR/model.safetensors from a checkpoint; only\n"
    "  all-hybrid, mean-fusion models (the published architecture) can be exported.\n"
    "  --dtype  weight dtype in the safetensors file (default f32: lossless; HF publishes bf16)\n"
    "  --force  overwrite an existing output\n"
    "Names and shapes follow the table in layers/model.h (conv1d (I, W) <-> (I, 1, W); a tied\n"
    "lm_head is not written).\n";

int run(const std::vector<std::string>& argv) {
  Args a(argv, {{"from-hf"}, {"to-hf"}, {"out"}, {"dtype"}, {"force", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!a.positionals().empty()) throw ArgError("unexpected argument '" + a.positionals()[0] + "'");
  if (a.has("from-hf") == a.has("to-hf")) throw ArgError("give exactly one of --from-hf or --to-hf");
  const std::string out = a.require("out");
  if (std::filesystem::exists(out) && !a.has("force"))
    HYMBA_USER_ERROR(out, ": already exists (use --force to overwrite)");
  if (auto src = a.get("from-hf")) {
    if (a.has("dtype")) throw ArgError("--dtype applies to --to-hf only (checkpoints hold f32)");
    hf::HFModel m = hf::load(*src);
    train::Checkpoint ck;
    ck.model_config_yaml = dump_model_config(m.config);
    ck.model = std::move(m.state);
    ck.meta = {{"converted_from", *src}};
    train::save_checkpoint(out, ck);
    std::printf("wrote %s: %zu tensors, %lld parameters\n", out.c_str(), ck.model.size(),
                static_cast<long long>(count_parameters(m.config)));
    return 0;
  }
  const std::string ckpt = *a.get("to-hf");
  DType dtype = DType::F32;
  const std::string d = a.get_or("dtype", "f32");
  if (d == "bf16") dtype = DType::BF16;
  else if (d == "f16") dtype = DType::F16;
  else if (d != "f32") throw ArgError("--dtype expects bf16, f16 or f32, got '" + d + "'");
  train::Checkpoint ck = train::load_checkpoint(ckpt, /*with_optimizer=*/false);
  ModelConfig cfg = parse_model_config_string(ck.model_config_yaml, ckpt + ":model_config");
  hf::save(out, cfg, ck.model, dtype);
  std::printf("wrote %s/config.json and %s/model.safetensors (%s)\n", out.c_str(), out.c_str(), d.c_str());
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("convert", "convert Hugging Face Hymba checkpoints to and from ours", run);

}  // namespace hymba::cli
