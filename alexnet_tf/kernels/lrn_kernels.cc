// Fused local response normalisation across channels (AlexNet, paper section 3.3), CPU.
//
//   d[c] = bias + alpha * sum_{|c' - c| <= r} x[c']^2,     y[c] = x[c] * d[c]^-beta
//   dx[c] = g[c] * d[c]^-beta - 2 alpha beta x[c] * sum_{|c' - c| <= r} g[c'] y[c'] / d[c']
//
// Why a kernel of our own: TF's CPU LRNGrad recomputes every window and calls pow() per
// element and window position, and the composed-op forms (band-matrix GEMMs plus elementwise
// kernels) stream each [n, C] intermediate through memory several times. Here each pixel's
// C channels (contiguous in NHWC, 48 or 128 floats) are one row that stays in L1: the forward
// reads x and writes y once, the backward reads g, x and y and writes dx once, recomputing d
// from x instead of keeping it from the forward pass (a recompute is cheaper than a round
// trip of [n, C] through memory).
//
// Built at first use by alexnet_tf/kernels/__init__.py with TF's own compile flags.

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace alexnet_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Per-row cost for the sharder, in cycles per channel: a few flops for the window sum,
// two square roots and a division for the power.
constexpr int64_t kCyclesPerChannel = 40;

Status UnchangedWithKnownChannels(InferenceContext* c) {
  ShapeHandle input;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &input));
  for (int i = 1; i < c->num_inputs(); ++i) {
    ShapeHandle other;
    TF_RETURN_IF_ERROR(c->Merge(input, c->input(i), &other));
  }
  c->set_output(0, input);
  return ::tensorflow::OkStatus();
}

// The constants of one LRN layer, read from the op's attributes.
struct LrnParams {
  int radius;
  float bias;
  float alpha;
  float beta;

  explicit LrnParams(OpKernelConstruction* context) {
    OP_REQUIRES_OK(context, context->GetAttr("depth_radius", &radius));
    OP_REQUIRES_OK(context, context->GetAttr("bias", &bias));
    OP_REQUIRES_OK(context, context->GetAttr("alpha", &alpha));
    OP_REQUIRES_OK(context, context->GetAttr("beta", &beta));
    OP_REQUIRES(context, radius >= 0,
                InvalidArgument("depth_radius must be >= 0, got ", radius));
    OP_REQUIRES(context, bias > 0.0f, InvalidArgument("bias must be > 0, got ", bias));
  }
};

// out[c] = d^-beta for the row's denominators d (all > 0). beta = 0.75, the paper's, takes
// 1 / sqrt(d * sqrt(d)): two square roots and a division, which the compiler vectorises,
// where pow() is a scalar library call.
inline void NegativePower(const float* d, int channels, float beta, float* out) {
  if (beta == 0.75f) {
    for (int c = 0; c < channels; ++c) out[c] = 1.0f / std::sqrt(d[c] * std::sqrt(d[c]));
  } else if (beta == 0.5f) {
    for (int c = 0; c < channels; ++c) out[c] = 1.0f / std::sqrt(d[c]);
  } else if (beta == 1.0f) {
    for (int c = 0; c < channels; ++c) out[c] = 1.0f / d[c];
  } else {
    for (int c = 0; c < channels; ++c) out[c] = std::pow(d[c], -beta);
  }
}

// window[c] = sum_{|c' - c| <= radius} padded[radius + c'], where `padded` holds the row's
// values between `radius` zeros on either side (so the window clips at the first and last
// channel, as TF's op does). One pass per window offset keeps every pass a plain vector add.
inline void WindowSum(const float* padded, int channels, int radius, float* window) {
  std::copy(padded, padded + channels, window);
  for (int k = 1; k <= 2 * radius; ++k) {
    const float* shifted = padded + k;
    for (int c = 0; c < channels; ++c) window[c] += shifted[c];
  }
}

// Scratch rows for one shard: a zero-padded row and two plain ones.
struct Scratch {
  std::vector<float> padded, window, power;
  Scratch(int channels, int radius)
      : padded(channels + 2 * radius, 0.0f), window(channels), power(channels) {}
  float* row() { return padded.data() + (padded.size() - window.size()) / 2; }
};

// d = bias + alpha * window sum of x^2, into scratch.window.
inline void Denominator(const float* x, int channels, const LrnParams& p, Scratch* s) {
  float* squares = s->row();
  for (int c = 0; c < channels; ++c) squares[c] = x[c] * x[c];
  WindowSum(s->padded.data(), channels, p.radius, s->window.data());
  for (int c = 0; c < channels; ++c) s->window[c] = p.bias + p.alpha * s->window[c];
}

// [rows, channels] view of a tensor of rank >= 1 (rank checked by the caller).
inline void AsRows(const Tensor& t, int64_t* rows, int* channels) {
  *channels = static_cast<int>(t.dim_size(t.dims() - 1));
  *rows = *channels == 0 ? 0 : t.NumElements() / *channels;
}

class LrnOp : public OpKernel {
 public:
  explicit LrnOp(OpKernelConstruction* context) : OpKernel(context), params_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() >= 1,
                InvalidArgument("input must have rank >= 1, got shape ",
                                input.shape().DebugString()));
    int64_t rows;
    int channels;
    AsRows(input, &rows, &channels);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    if (rows == 0) return;
    const float* x = input.flat<float>().data();
    float* y = output->flat<float>().data();
    const LrnParams p = params_;

    auto work = [=](int64_t begin, int64_t end) {
      Scratch s(channels, p.radius);
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * channels;
        float* yr = y + r * channels;
        Denominator(xr, channels, p, &s);
        NegativePower(s.window.data(), channels, p.beta, s.power.data());
        for (int c = 0; c < channels; ++c) yr[c] = xr[c] * s.power[c];
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, rows,
                        kCyclesPerChannel * channels, work);
  }

 private:
  const LrnParams params_;
};

class LrnGradOp : public OpKernel {
 public:
  explicit LrnGradOp(OpKernelConstruction* context) : OpKernel(context), params_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& gradients = context->input(0);
    const Tensor& input = context->input(1);
    const Tensor& output = context->input(2);
    OP_REQUIRES(context,
                gradients.shape() == input.shape() && output.shape() == input.shape(),
                InvalidArgument("gradients, input and output must have the same shape, got ",
                                gradients.shape().DebugString(), ", ",
                                input.shape().DebugString(), " and ",
                                output.shape().DebugString()));
    OP_REQUIRES(context, input.dims() >= 1,
                InvalidArgument("input must have rank >= 1, got shape ",
                                input.shape().DebugString()));
    int64_t rows;
    int channels;
    AsRows(input, &rows, &channels);
    Tensor* backprops = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &backprops));
    if (rows == 0) return;
    const float* g = gradients.flat<float>().data();
    const float* x = input.flat<float>().data();
    const float* y = output.flat<float>().data();
    float* dx = backprops->flat<float>().data();
    const LrnParams p = params_;
    const float cross = -2.0f * p.alpha * p.beta;

    auto work = [=](int64_t begin, int64_t end) {
      Scratch s(channels, p.radius);
      std::vector<float> window_grad(channels);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t offset = r * channels;
        const float* gr = g + offset;
        const float* xr = x + offset;
        const float* yr = y + offset;
        float* dxr = dx + offset;
        Denominator(xr, channels, p, &s);  // s.window = d
        NegativePower(s.window.data(), channels, p.beta, s.power.data());
        float* ratio = s.row();  // the padded row now holds g * y / d
        for (int c = 0; c < channels; ++c) ratio[c] = gr[c] * yr[c] / s.window[c];
        WindowSum(s.padded.data(), channels, p.radius, window_grad.data());
        for (int c = 0; c < channels; ++c) {
          dxr[c] = gr[c] * s.power[c] + cross * xr[c] * window_grad[c];
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, rows,
                        2 * kCyclesPerChannel * channels, work);
  }

 private:
  const LrnParams params_;
};

}  // namespace

REGISTER_OP("AlexnetLrn")
    .Input("input: float")
    .Output("output: float")
    .Attr("depth_radius: int = 2")
    .Attr("bias: float = 2.0")
    .Attr("alpha: float = 0.0001")
    .Attr("beta: float = 0.75")
    .SetShapeFn(UnchangedWithKnownChannels)
    .Doc("Local response normalisation across the last dimension, fused in one pass.");

REGISTER_OP("AlexnetLrnGrad")
    .Input("gradients: float")
    .Input("input: float")
    .Input("output: float")
    .Output("backprops: float")
    .Attr("depth_radius: int = 2")
    .Attr("bias: float = 2.0")
    .Attr("alpha: float = 0.0001")
    .Attr("beta: float = 0.75")
    .SetShapeFn(UnchangedWithKnownChannels)
    .Doc("Gradient of AlexnetLrn with respect to its input.");

REGISTER_KERNEL_BUILDER(Name("AlexnetLrn").Device(DEVICE_CPU), LrnOp);
REGISTER_KERNEL_BUILDER(Name("AlexnetLrnGrad").Device(DEVICE_CPU), LrnGradOp);

}  // namespace alexnet_tf
