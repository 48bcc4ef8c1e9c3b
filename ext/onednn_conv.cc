// oneDNN stride-2 VALID convolutions behind XLA FFI custom calls (CPU, fp32).
//
// One convolution C: src (N, H, W, Ci) NHWC, weights HWIO (k, k, Ci, Co), dst (N, OH, OW, Co),
// stride 2, no padding (VALID; a last input row/column that no window reaches is allowed).
// Three handlers compute C's forward pass, its input (data) gradient and its kernel gradient:
//
//   onednn_conv_fwd(src, w) -> dst                          convolution_forward
//   onednn_conv_bwd_data(diff_dst, w) -> diff_src            convolution_backward_data
//   onednn_conv_bwd_weights(src, diff_dst) -> diff_w         convolution_backward_weights
//
// Each takes an int32 attribute `flip_swap`. With flip_swap = 0 the kernel buffer is C's HWIO
// kernel. With flip_swap = 1 it is the kernel v (k, k, Co, Ci) of the stride-2 transposed conv
// T(x) = lax.conv_transpose(x, v, VALID) (kernel not flipped), and C's kernel is
// flip(v, (0, 1)).swapaxes(2, 3): then T is C's data gradient, and T's gradients are C's forward
// pass and C's kernel gradient with the roles of src and diff_dst swapped. The channel swap is a
// stride choice of the weights' memory descriptor, the spatial flip a copy of k*k contiguous blocks.
//
// The forward pass may return partial sums: a dst of G * Co channels (flip_swap = 0, G dividing Ci)
// holds, at channel g * Co + o, the sum over input channels [g Ci/G, (g+1) Ci/G) only (a grouped
// convolution with every group's weights taken from the one HWIO kernel). The caller adds them.
//
// Activations may carry any number of leading dimensions: all but the last three are folded into N.
// Primitives (and the reorders between the plain kernel and the layout oneDNN picks) are built once
// per shape and kept in a mutex-guarded cache; they run with a user-provided scratchpad held per
// calling thread, so concurrent calls from XLA's threads are safe.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Shape {
  int64_t n, h, w, ci, oh, ow, co, k;
  int flip_swap;
  int64_t groups = 1;  // the forward pass's input-channel chunks (partial sums), 1 elsewhere
};

struct Key {
  int kind;
  Shape s;
  bool operator==(const Key& o) const {
    return kind == o.kind && s.n == o.s.n && s.h == o.s.h && s.w == o.s.w && s.ci == o.s.ci && s.oh == o.s.oh &&
           s.ow == o.s.ow && s.co == o.s.co && s.k == o.s.k && s.flip_swap == o.s.flip_swap &&
           s.groups == o.s.groups;
  }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    const int64_t v[] = {key.kind, key.s.n,  key.s.h, key.s.w,         key.s.ci,    key.s.oh,
                         key.s.ow, key.s.co, key.s.k, key.s.flip_swap, key.s.groups};
    size_t h = 1469598103934665603ull;
    for (int64_t x : v) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};

struct Entry {
  dnnl::primitive prim;
  dnnl::memory::desc src_md, wei_md, dst_md;  // what the primitive uses (wei_md may be blocked)
  dnnl::memory::desc user_wei_md;             // the plain kernel in the caller's layout (HWIO or HWOI)
  bool reorder_wei = false;
  dnnl::primitive wei_reorder;  // user -> primitive (fwd, bwd data) or primitive -> user (bwd weights)
  size_t scratch_bytes = 0;     // primitive's and reorder's scratchpads, each at most this
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using md = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

md ActMd(int64_t n, int64_t c, int64_t h, int64_t w) { return md({n, c, h, w}, dt::f32, tag::nhwc); }

// The kernel as stored by the caller, with logical dims (O, I, KH, KW) of convolution C.
md UserWeiMd(const Shape& s) {
  const int64_t o = s.co, i = s.ci, k = s.k;
  if (!s.flip_swap) return md({o, i, k, k}, dt::f32, tag::hwio);        // (k, k, I, O) row-major
  return md({o, i, k, k}, dt::f32, dnnl::memory::dims{i, 1, k * o * i, o * i});  // (k, k, O, I) row-major
}

// Scratchpad size and the reorder between the caller's plain kernel and the primitive's layout.
std::shared_ptr<Entry> Finish(int kind, std::shared_ptr<Entry> e, const md& scratch_md,
                              const dnnl::primitive_attr& attr) {
  auto& eng = Engine();
  e->scratch_bytes = scratch_md.get_size();
  e->reorder_wei = e->wei_md != e->user_wei_md;
  if (e->reorder_wei) {
    const bool to_user = kind == kBwdWeights;
    auto rpd = to_user ? dnnl::reorder::primitive_desc(eng, e->wei_md, eng, e->user_wei_md, attr)
                       : dnnl::reorder::primitive_desc(eng, e->user_wei_md, eng, e->wei_md, attr);
    e->wei_reorder = dnnl::reorder(rpd);
    e->scratch_bytes = std::max(e->scratch_bytes, rpd.scratchpad_desc().get_size());
  }
  return e;
}

std::shared_ptr<Entry> Build(int kind, const Shape& s) {
  auto& eng = Engine();
  auto e = std::make_shared<Entry>();
  e->src_md = ActMd(s.n, s.ci, s.h, s.w);
  e->dst_md = ActMd(s.n, s.co, s.oh, s.ow);
  e->user_wei_md = UserWeiMd(s);
  const md any_wei({s.co, s.ci, s.k, s.k}, dt::f32, tag::any);
  const dnnl::memory::dims strides{2, 2}, pad_l{0, 0};
  // Right padding so that (H + pad_r - k) / 2 + 1 == OH exactly: 0 or -1 (an unused last row).
  const dnnl::memory::dims pad_r{(s.oh - 1) * 2 + s.k - s.h, (s.ow - 1) * 2 + s.k - s.w};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  md scratch_md;
  if (s.groups > 1) {  // the forward pass as partial sums over input-channel chunks (see the header)
    const int64_t g = s.groups, gi = s.ci / g, k = s.k, co = s.co;
    e->dst_md = ActMd(s.n, g * co, s.oh, s.ow);
    // The HWIO kernel as dims (G, O, I/G, KH, KW): group g's input channel i is channel g * Ci/G + i.
    e->user_wei_md = md({g, co, gi, k, k}, dt::f32, dnnl::memory::dims{gi * co, 1, co, k * s.ci * co, s.ci * co});
    const md any_group_wei({g, co, gi, k, k}, dt::f32, tag::any);
    auto pd = dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, algo, e->src_md,
                                                        any_group_wei, e->dst_md, strides, pad_l, pad_r, attr);
    e->prim = dnnl::convolution_forward(pd);
    e->wei_md = pd.weights_desc();
    return Finish(kind, e, pd.scratchpad_desc(), attr);
  }
  // A conv whose output is one pixel and whose window covers the whole input is an inner product
  // (one GEMM); oneDNN's direct convolutions are slow there (the decoder's first layer).
  static const bool use_ip = [] {
    const char* env = std::getenv("ONEDNN_CONV_INNER_PRODUCT");
    return env == nullptr || std::string(env) != "0";
  }();
  if (use_ip && s.oh == 1 && s.ow == 1 && s.h == s.k && s.w == s.k) {
    // As a 1-D problem over the k*k taps: src (N, k*k, Ci) "nwc", weights (Co, Ci, k*k) with the
    // caller's strides, dst (N, Co): the same bytes as the 2-D descriptors.
    const int64_t taps = s.k * s.k;
    e->src_md = md({s.n, s.ci, taps}, dt::f32, tag::nwc);
    e->dst_md = md({s.n, s.co}, dt::f32, tag::nc);  // the same bytes as (N, 1, 1, Co)
    e->user_wei_md = s.flip_swap ? md({s.co, s.ci, taps}, dt::f32, dnnl::memory::dims{s.ci, 1, s.co * s.ci})
                                 : md({s.co, s.ci, taps}, dt::f32, dnnl::memory::dims{1, s.co, s.ci * s.co});
    const md ip_wei({s.co, s.ci, taps}, dt::f32, tag::any);
    auto fwd_pd = dnnl::inner_product_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, e->src_md,
                                                              ip_wei, e->dst_md, attr);
    if (kind == kFwd) {
      e->prim = dnnl::inner_product_forward(fwd_pd);
      e->wei_md = fwd_pd.weights_desc();
      scratch_md = fwd_pd.scratchpad_desc();
    } else if (kind == kBwdData) {
      auto pd = dnnl::inner_product_backward_data::primitive_desc(eng, e->src_md, ip_wei, e->dst_md, fwd_pd, attr);
      e->prim = dnnl::inner_product_backward_data(pd);
      e->wei_md = pd.weights_desc();
      scratch_md = pd.scratchpad_desc();
    } else {
      auto pd =
          dnnl::inner_product_backward_weights::primitive_desc(eng, e->src_md, ip_wei, e->dst_md, fwd_pd, attr);
      e->prim = dnnl::inner_product_backward_weights(pd);
      e->wei_md = pd.diff_weights_desc();
      scratch_md = pd.scratchpad_desc();
    }
    return Finish(kind, e, scratch_md, attr);
  }
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, algo, e->src_md,
                                                          any_wei, e->dst_md, strides, pad_l, pad_r, attr);
  if (kind == kFwd) {
    e->prim = dnnl::convolution_forward(fwd_pd);
    e->wei_md = fwd_pd.weights_desc();
    scratch_md = fwd_pd.scratchpad_desc();
  } else if (kind == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(eng, algo, e->src_md, any_wei, e->dst_md, strides,
                                                              pad_l, pad_r, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_data(pd);
    e->wei_md = pd.weights_desc();
    scratch_md = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(eng, algo, e->src_md, any_wei, e->dst_md, strides,
                                                                 pad_l, pad_r, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->wei_md = pd.diff_weights_desc();
    scratch_md = pd.scratchpad_desc();
  }
  return Finish(kind, e, scratch_md, attr);
}

std::shared_ptr<Entry> Get(int kind, const Shape& s) {
  static std::mutex mu;
  static std::unordered_map<Key, std::shared_ptr<Entry>, KeyHash> cache;
  const Key key{kind, s};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto e = Build(kind, s);  // outside the lock: building can take milliseconds
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, e).first->second;  // a concurrent builder's entry wins; both are equal
}

// 64-byte aligned growable buffers, one set per calling thread.
struct Buffer {
  void* ptr = nullptr;
  size_t size = 0;
  void* Get(size_t bytes) {
    if (bytes > size) {
      std::free(ptr);
      size = (bytes + 4095) / 4096 * 4096;
      ptr = std::aligned_alloc(64, size);
    }
    return ptr;
  }
  ~Buffer() { std::free(ptr); }
};

struct ThreadState {
  Buffer scratch, wei, flip;
  Buffer sum, part;  // the kernel gradient's chunked sum (RunBwdWeights)
  std::unique_ptr<dnnl::stream> stream;
  dnnl::stream& Stream() {
    if (!stream) stream = std::make_unique<dnnl::stream>(Engine());
    return *stream;
  }
};

ThreadState& State() {
  thread_local ThreadState state;
  return state;
}

// Reverses the k*k spatial taps of a (k, k, A, B) kernel: `block` floats per tap.
void FlipTaps(const float* in, float* out, int64_t k, int64_t block) {
  const int64_t taps = k * k;
  for (int64_t t = 0; t < taps; ++t) std::memcpy(out + (taps - 1 - t) * block, in + t * block, block * sizeof(float));
}

ffi::Error CheckRank(const char* what, size_t rank, size_t want, bool at_least) {
  if (at_least ? rank >= want : rank == want) return ffi::Error::Success();
  return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                    std::string(what) + ": rank " + std::to_string(rank) + ", expected " + (at_least ? ">= " : "") +
                        std::to_string(want));
}

// (N, H, W, C) of an activation with leading dims folded into N.
void ActDims(ffi::Span<const int64_t> d, int64_t* n, int64_t* h, int64_t* w, int64_t* c) {
  const size_t r = d.size();
  *n = 1;
  for (size_t i = 0; i + 3 < r; ++i) *n *= d[i];
  *h = d[r - 3];
  *w = d[r - 2];
  *c = d[r - 1];
}

// The user scratchpad of one primitive execution (each at most e.scratch_bytes).
dnnl::memory Scratch(const Entry& e, ThreadState& st) {
  const size_t bytes = std::max<size_t>(e.scratch_bytes, 1);
  return dnnl::memory(dnnl::memory::desc({static_cast<int64_t>(bytes)}, dt::u8, tag::a), Engine(),
                      st.scratch.Get(bytes));
}

// Forward or backward data: `wei_user` is the caller's kernel buffer.
void RunFwdOrBwdData(int kind, const Shape& s, float* src, float* wei_user, float* dst) {
  auto e = Get(kind, s);
  auto& eng = Engine();
  auto& st = State();
  auto& strm = st.Stream();
  dnnl::memory scratch = Scratch(*e, st);
  float* w = wei_user;
  if (s.flip_swap) {  // the spatial flip: copy the taps reversed
    w = static_cast<float*>(st.flip.Get(static_cast<size_t>(s.k * s.k * s.ci * s.co) * sizeof(float)));
    FlipTaps(wei_user, w, s.k, s.ci * s.co);
  }
  dnnl::memory user_wei(e->user_wei_md, eng, w);
  dnnl::memory wei = user_wei;
  if (e->reorder_wei) {
    wei = dnnl::memory(e->wei_md, eng, st.wei.Get(e->wei_md.get_size()));
    e->wei_reorder.execute(strm, {{DNNL_ARG_FROM, user_wei}, {DNNL_ARG_TO, wei}, {DNNL_ARG_SCRATCHPAD, scratch}});
  }
  dnnl::memory src_m(e->src_md, eng, src), dst_m(e->dst_md, eng, dst);
  if (kind == kFwd) {
    e->prim.execute(strm, {{DNNL_ARG_SRC, src_m},
                           {DNNL_ARG_WEIGHTS, wei},
                           {DNNL_ARG_DST, dst_m},
                           {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {
    e->prim.execute(strm, {{DNNL_ARG_DIFF_SRC, src_m},
                           {DNNL_ARG_WEIGHTS, wei},
                           {DNNL_ARG_DIFF_DST, dst_m},
                           {DNNL_ARG_SCRATCHPAD, scratch}});
  }
  strm.wait();
}

// One backward-weights execution over all frames of `s`: the kernel gradient into `out`, in the
// caller's layout before any spatial flip.
void BwdWeightsOnce(const Shape& s, float* src, float* dst, float* out) {
  auto e = Get(kBwdWeights, s);
  auto& eng = Engine();
  auto& st = State();
  auto& strm = st.Stream();
  dnnl::memory scratch = Scratch(*e, st);
  dnnl::memory user_wei(e->user_wei_md, eng, out);
  dnnl::memory wei = user_wei;
  if (e->reorder_wei) wei = dnnl::memory(e->wei_md, eng, st.wei.Get(e->wei_md.get_size()));
  dnnl::memory src_m(e->src_md, eng, src), dst_m(e->dst_md, eng, dst);
  e->prim.execute(strm, {{DNNL_ARG_SRC, src_m},
                         {DNNL_ARG_DIFF_WEIGHTS, wei},
                         {DNNL_ARG_DIFF_DST, dst_m},
                         {DNNL_ARG_SCRATCHPAD, scratch}});
  if (e->reorder_wei) {
    e->wei_reorder.execute(strm, {{DNNL_ARG_FROM, wei}, {DNNL_ARG_TO, user_wei}, {DNNL_ARG_SCRATCHPAD, scratch}});
  }
  strm.wait();
}

// Output rows (frames x OH) that one backward-weights execution sums. oneDNN's kernels add the
// products of all frames and rows into one float32 accumulator per weight, so their rounding error
// grows with N * OH: 5e-5 of the gradient's largest value at 800 frames of 64x64 input, where
// TensorFlow's float32 code is at 2e-6. Executions over chunks of about this many rows, added in
// double, keep it near 1e-6 at any N, and each chunk is still thousands of rows of GEMM-sized work.
constexpr int64_t kChunkRows = 1024;

// The kernel gradient: chunks of frames of nearly equal size, summed in double.
void RunBwdWeights(const Shape& s, float* src, float* wei_user, float* dst) {
  auto& st = State();
  const int64_t block = s.ci * s.co, count = s.k * s.k * block;
  float* out = s.flip_swap ? static_cast<float*>(st.flip.Get(count * sizeof(float))) : wei_user;
  const int64_t chunks = (s.n * s.oh + kChunkRows - 1) / kChunkRows;
  if (chunks <= 1) {
    BwdWeightsOnce(s, src, dst, out);
  } else {
    const int64_t frames = (s.n + chunks - 1) / chunks;
    double* sum = static_cast<double*>(st.sum.Get(count * sizeof(double)));
    float* part = static_cast<float*>(st.part.Get(count * sizeof(float)));
    std::fill(sum, sum + count, 0.0);
    for (int64_t n0 = 0; n0 < s.n; n0 += frames) {
      Shape c = s;
      c.n = std::min(frames, s.n - n0);
      BwdWeightsOnce(c, src + n0 * s.h * s.w * s.ci, dst + n0 * s.oh * s.ow * s.co, part);
      for (int64_t i = 0; i < count; ++i) sum[i] += part[i];
    }
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(sum[i]);
  }
  if (s.flip_swap) FlipTaps(out, wei_user, s.k, block);
}

ffi::Error Run(int kind, const Shape& s, float* src, float* wei_user, float* dst) {
  if (s.n == 0) {  // no frames: oneDNN rejects zero-sized dims; the kernel gradient is zero
    if (kind == kBwdWeights) std::memset(wei_user, 0, static_cast<size_t>(s.k * s.k * s.ci * s.co) * sizeof(float));
    return ffi::Error::Success();
  }
  try {
    if (kind == kBwdWeights) {
      RunBwdWeights(s, src, wei_user, dst);
    } else {
      RunFwdOrBwdData(kind, s, src, wei_user, dst);
    }
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("onednn_conv: ") + err.what());
  }
  return ffi::Error::Success();
}

// Kernel buffer dims (k, k, A, B) -> (k, Ci, Co) of convolution C.
ffi::Error KernelDims(ffi::Span<const int64_t> d, int32_t flip_swap, int64_t* k, int64_t* ci, int64_t* co) {
  if (auto err = CheckRank("kernel", d.size(), 4, false); err.failure()) return err;
  if (d[0] != d[1]) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "kernel: not square");
  *k = d[0];
  *ci = flip_swap ? d[3] : d[2];
  *co = flip_swap ? d[2] : d[3];
  return ffi::Error::Success();
}

ffi::Error ConvFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                       int32_t flip_swap) {
  if (auto err = CheckRank("x", x.dimensions().size(), 3, true); err.failure()) return err;
  Shape s{};
  s.flip_swap = flip_swap;
  if (auto err = KernelDims(w.dimensions(), flip_swap, &s.k, &s.ci, &s.co); err.failure()) return err;
  int64_t c = 0, n2 = 0, c2 = 0;
  ActDims(x.dimensions(), &s.n, &s.h, &s.w, &c);
  ActDims(y->dimensions(), &n2, &s.oh, &s.ow, &c2);
  // G * Co output channels: the partial sums over G input-channel chunks (see the header)
  if (!flip_swap && c2 > s.co && c2 % s.co == 0 && s.ci % (c2 / s.co) == 0) s.groups = c2 / s.co;
  if (c != s.ci || c2 != s.groups * s.co || n2 != s.n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "conv_fwd: shapes");
  }
  return Run(kFwd, s, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error ConvBwdDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                           int32_t flip_swap) {
  if (auto err = CheckRank("dy", dy.dimensions().size(), 3, true); err.failure()) return err;
  Shape s{};
  s.flip_swap = flip_swap;
  if (auto err = KernelDims(w.dimensions(), flip_swap, &s.k, &s.ci, &s.co); err.failure()) return err;
  int64_t c = 0, n2 = 0, c2 = 0;
  ActDims(dy.dimensions(), &s.n, &s.oh, &s.ow, &c);
  ActDims(dx->dimensions(), &n2, &s.h, &s.w, &c2);
  if (c != s.co || c2 != s.ci || n2 != s.n) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "conv_bwd_data: shapes");
  return Run(kBwdData, s, dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error ConvBwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                              int32_t flip_swap) {
  if (auto err = CheckRank("x", x.dimensions().size(), 3, true); err.failure()) return err;
  if (auto err = CheckRank("dy", dy.dimensions().size(), 3, true); err.failure()) return err;
  Shape s{};
  s.flip_swap = flip_swap;
  if (auto err = KernelDims(dw->dimensions(), flip_swap, &s.k, &s.ci, &s.co); err.failure()) return err;
  int64_t c = 0, n2 = 0, c2 = 0;
  ActDims(x.dimensions(), &s.n, &s.h, &s.w, &c);
  ActDims(dy.dimensions(), &n2, &s.oh, &s.ow, &c2);
  if (c != s.ci || c2 != s.co || n2 != s.n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "conv_bwd_weights: shapes");
  }
  return Run(kBwdWeights, s, x.typed_data(), dw->typed_data(), dy.typed_data());
}

}  // namespace

// Built with -fvisibility=hidden: only these symbols are exported (declared first, so the
// definitions that the macro writes inherit the visibility).
#define ONEDNN_CONV_EXPORT extern "C" __attribute__((visibility("default")))
ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConvFwd(XLA_FFI_CallFrame* call_frame);
ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConvBwdData(XLA_FFI_CallFrame* call_frame);
ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConvBwdWeights(XLA_FFI_CallFrame* call_frame);
ONEDNN_CONV_EXPORT const char* OnednnConvInfo();

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, ConvFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("flip_swap"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, ConvBwdDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("flip_swap"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, ConvBwdWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("flip_swap"));

// The oneDNN version and the CPU ISA it dispatches to, for diagnostics: "3.2.0 avx512_core".
extern "C" const char* OnednnConvInfo() {
  static std::string info = [] {
    const dnnl_version_t* v = dnnl_version();
    std::string isa;
    switch (dnnl::get_effective_cpu_isa()) {
      case dnnl::cpu_isa::avx512_core_amx: isa = "avx512_core_amx"; break;
      case dnnl::cpu_isa::avx512_core_bf16: isa = "avx512_core_bf16"; break;
      case dnnl::cpu_isa::avx512_core_vnni: isa = "avx512_core_vnni"; break;
      case dnnl::cpu_isa::avx512_core: isa = "avx512_core"; break;
      case dnnl::cpu_isa::avx2_vnni: isa = "avx2_vnni"; break;
      case dnnl::cpu_isa::avx2: isa = "avx2"; break;
      default: isa = "other"; break;
    }
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " " + isa;
  }();
  return info.c_str();
}
