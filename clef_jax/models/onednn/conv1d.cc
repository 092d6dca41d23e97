// SAME-padded grouped 1-D convolution on CPU through oneDNN, as XLA FFI custom calls.
//
// Three handlers, float32, channels-last activations as JAX stores them:
//   clef_onednn_conv1d_fwd:         x (B, L, Cin), w (K, Cin/G, Cout)  -> y  (B, O, Cout)
//   clef_onednn_conv1d_bwd_data:    g (B, O, Cout), w (K, Cin/G, Cout) -> dx (B, L, Cin)
//   clef_onednn_conv1d_bwd_weights: x (B, L, Cin), g (B, O, Cout)      -> dw (K, Cin/G, Cout)
// with O = ceil(L / stride) and TF/JAX SAME padding (floor(p / 2) zeros on the left). Output
// channels belong to groups in contiguous blocks, like PyTorch.
//
// The activations are handed to oneDNN in their own layout (oneDNN's `nwc`), so no activation
// is copied; only the kernel is reordered into the primitive's preferred (blocked) layout, a
// few KiB to a few MiB per call. Primitives are created once per problem shape and cached;
// executing a primitive from several threads at once is safe because each call brings its own
// scratchpad (scratchpad mode `user`, one buffer per calling thread) and its own stream.

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using Dt = dnnl::memory::data_type;

namespace {

enum Op : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Geometry {
  int64_t b, l, cin, cout, groups, k, stride, out_len, pad_l, pad_r;
};

Geometry MakeGeometry(int64_t b, int64_t l, int64_t cin, int64_t cout, int64_t groups, int64_t k,
                      int64_t stride) {
  Geometry g{b, l, cin, cout, groups, k, stride, 0, 0, 0};
  g.out_len = (l + stride - 1) / stride;
  int64_t p = (g.out_len - 1) * stride + k - l;
  if (p < 0) p = 0;
  g.pad_l = p / 2;
  // Exactly out_len outputs: pad_l + l + pad_r = stride * (out_len - 1) + k.
  g.pad_r = (g.out_len - 1) * stride + k - l - g.pad_l;
  return g;
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// The kernel as JAX stores it, (K, Cin/G, Cout) row-major, described in oneDNN's dimension order.
memory::desc WeightsDesc(const Geometry& g, Tag tag_if_grouped, Tag tag_if_dense) {
  if (g.groups == 1) return memory::desc({g.cout, g.cin, g.k}, Dt::f32, tag_if_dense);
  return memory::desc({g.groups, g.cout / g.groups, g.cin / g.groups, g.k}, Dt::f32,
                      tag_if_grouped);
}

struct Plan {
  dnnl::primitive conv;
  memory::desc x_md, y_md, w_user_md, w_md, scratch_md;
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;  // user -> primitive layout (fwd, bwd data); reverse for dW.
};

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  memory::desc x({g.b, g.cin, g.l}, Dt::f32, Tag::nwc);
  memory::desc y({g.b, g.cout, g.out_len}, Dt::f32, Tag::nwc);
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x,
      WeightsDesc(g, Tag::any, Tag::any), y, {g.stride}, {g.pad_l}, {g.pad_r}, attr);
}

std::unique_ptr<Plan> MakePlan(Op op, const Geometry& g) {
  auto plan = std::make_unique<Plan>();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  plan->x_md = memory::desc({g.b, g.cin, g.l}, Dt::f32, Tag::nwc);
  plan->y_md = memory::desc({g.b, g.cout, g.out_len}, Dt::f32, Tag::nwc);
  plan->w_user_md = WeightsDesc(g, Tag::wigo, Tag::wio);
  auto fwd = ForwardPd(g);
  if (op == kFwd) {
    plan->w_md = fwd.weights_desc();
    plan->scratch_md = fwd.scratchpad_desc();
    plan->conv = dnnl::convolution_forward(fwd);
  } else if (op == kBwdData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, plan->x_md,
        WeightsDesc(g, Tag::any, Tag::any), plan->y_md, {g.stride}, {g.pad_l}, {g.pad_r}, fwd,
        attr);
    plan->w_md = pd.weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
    plan->conv = dnnl::convolution_backward_data(pd);
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, plan->x_md,
        WeightsDesc(g, Tag::any, Tag::any), plan->y_md, {g.stride}, {g.pad_l}, {g.pad_r}, fwd,
        attr);
    plan->w_md = pd.diff_weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
    plan->conv = dnnl::convolution_backward_weights(pd);
  }
  plan->reorder_weights = plan->w_md != plan->w_user_md;
  if (plan->reorder_weights) {
    const memory::desc& from = op == kBwdWeights ? plan->w_md : plan->w_user_md;
    const memory::desc& to = op == kBwdWeights ? plan->w_user_md : plan->w_md;
    plan->weights_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), from,
                                                                        Engine(), to));
  }
  return plan;
}

const Plan& GetPlan(Op op, const Geometry& g) {
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Plan>> cache;
  Key key{op, g.b, g.l, g.cin, g.cout, g.groups, g.k, g.stride};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, MakePlan(op, g)).first;
  return *it->second;  // Entries are never erased: the reference stays valid.
}

void* Scratch(size_t bytes) {
  thread_local std::vector<char> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

// Runs one convolution primitive. `w_ptr` is the kernel in JAX layout: read for fwd / bwd data,
// written for bwd weights.
void Execute(Op op, const Geometry& g, void* x_ptr, void* y_ptr, void* w_ptr) {
  const Plan& plan = GetPlan(op, g);
  dnnl::engine& engine = Engine();
  dnnl::stream& stream = Stream();
  memory x(plan.x_md, engine, x_ptr);
  memory y(plan.y_md, engine, y_ptr);
  memory w_user(plan.w_user_md, engine, w_ptr);
  std::vector<char> w_buffer;
  memory w = w_user;
  if (plan.reorder_weights) {
    w_buffer.resize(plan.w_md.get_size());
    w = memory(plan.w_md, engine, w_buffer.data());
    if (op != kBwdWeights) plan.weights_reorder.execute(stream, w_user, w);
  }
  memory scratch(plan.scratch_md, engine, Scratch(plan.scratch_md.get_size()));
  std::unordered_map<int, memory> args{{DNNL_ARG_SCRATCHPAD, scratch}};
  if (op == kFwd) {
    args.insert({{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
  } else if (op == kBwdData) {
    args.insert({{DNNL_ARG_DIFF_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_DST, y}});
  } else {
    args.insert({{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_WEIGHTS, w}, {DNNL_ARG_DIFF_DST, y}});
  }
  plan.conv.execute(stream, args);
  if (plan.reorder_weights && op == kBwdWeights) plan.weights_reorder.execute(stream, w, w_user);
  stream.wait();
}

ffi::Error Check(int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride) {
  if (groups < 1 || cin % groups || cout % groups)
    return ffi::Error::InvalidArgument("channels must be divisible by groups");
  if (stride < 1 || k < stride)
    return ffi::Error::InvalidArgument("need 1 <= stride <= kernel size");
  return ffi::Error::Success();
}

template <typename F>
ffi::Error Guarded(F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(e.what());
  }
  return ffi::Error::Success();
}

ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t groups) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 3 || wd.size() != 3) return ffi::Error::InvalidArgument("rank must be 3");
  if (wd[1] * groups != xd[2]) return ffi::Error::InvalidArgument("kernel/input channels");
  if (auto e = Check(xd[2], wd[2], groups, wd[0], stride); !e.success()) return e;
  Geometry g = MakeGeometry(xd[0], xd[1], xd[2], wd[2], groups, wd[0], stride);
  return Guarded([&] { Execute(kFwd, g, x.untyped_data(), y->untyped_data(), w.untyped_data()); });
}

ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t groups,
                       int64_t length) {
  auto yd = dy.dimensions();
  auto wd = w.dimensions();
  if (yd.size() != 3 || wd.size() != 3) return ffi::Error::InvalidArgument("rank must be 3");
  int64_t cin = wd[1] * groups;
  if (auto e = Check(cin, wd[2], groups, wd[0], stride); !e.success()) return e;
  Geometry g = MakeGeometry(yd[0], length, cin, wd[2], groups, wd[0], stride);
  if (g.out_len != yd[1] || g.cout != yd[2])
    return ffi::Error::InvalidArgument("output gradient shape");
  return Guarded([&] {
    Execute(kBwdData, g, dx->untyped_data(), dy.untyped_data(), w.untyped_data());
  });
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t groups,
                          int64_t kernel_size) {
  auto xd = x.dimensions();
  auto yd = dy.dimensions();
  if (xd.size() != 3 || yd.size() != 3) return ffi::Error::InvalidArgument("rank must be 3");
  if (auto e = Check(xd[2], yd[2], groups, kernel_size, stride); !e.success()) return e;
  Geometry g = MakeGeometry(xd[0], xd[1], xd[2], yd[2], groups, kernel_size, stride);
  if (g.out_len != yd[1] || g.b != yd[0])
    return ffi::Error::InvalidArgument("output gradient shape");
  return Guarded([&] {
    Execute(kBwdWeights, g, x.untyped_data(), dy.untyped_data(), dw->untyped_data());
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ClefOnednnConv1dFwd, ConvFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("groups"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ClefOnednnConv1dBwdData, ConvBwdData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("groups")
                                  .Attr<int64_t>("length"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ClefOnednnConv1dBwdWeights, ConvBwdWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("groups")
                                  .Attr<int64_t>("kernel_size"));
