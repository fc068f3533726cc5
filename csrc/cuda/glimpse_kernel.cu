// CUDA kernels of the glimpse operators (retina_glimpse and box_glimpse share them; see glimpse.h).
//
// Forward: one launch per call, one thread per output cell (grid-stride loop), whatever the
// number of boxes. Backward: one launch, a 2-D grid whose x dimension is the box (sample, k), so
// that each block reduces its threads' box gradients in shared memory and adds them with one
// atomic per block and value; the images' gradient is accumulated with atomicAdd in the
// accumulation type (float for float16/bfloat16/float32, double for float64), then cast. The
// order of atomic additions varies from run to run, so the CUDA backward is not bitwise
// deterministic: it raises under torch.use_deterministic_algorithms(True), as grid_sample's does.
// Nothing here reads device memory from the host: the ops can be captured in a CUDA graph.
#include "../glimpse.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace gdram_ext {
namespace {

constexpr int kThreads = 256;

// Sizes and element strides of the images, and the output cell an index stands for.
struct Layout {
  int64_t channels, height, width;
  int64_t stride_b, stride_c, stride_h, stride_w;
  int64_t rows, cols, count;

  // index = (((b * count + k) * channels + ch) * rows + r) * cols + c
  __device__ __forceinline__ void split(int64_t index, int64_t& b, int64_t& k, int64_t& ch, int64_t& r, int64_t& c)
      const {
    c = index % cols;
    index /= cols;
    r = index % rows;
    index /= rows;
    ch = index % channels;
    index /= channels;
    k = index % count;
    b = index / count;
  }
};

Layout make_layout(const at::Tensor& images, const Boxes& boxes) {
  return Layout{
      images.size(1),
      images.size(2),
      images.size(3),
      images.stride(0),
      images.stride(1),
      images.stride(2),
      images.stride(3),
      boxes.rows,
      boxes.cols,
      boxes.count};
}

__device__ __forceinline__ AreaCell area_cell(const BoxFrame& f, const Layout& l, int64_t r, int64_t c) {
  return AreaCell{f.left + c * f.cell_w, f.top + r * f.cell_h, f.cell_w, f.cell_h, l.height, l.width};
}

template <typename scalar_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ images, scalar_t* __restrict__ output, Layout layout, Boxes boxes, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t b, k, ch, r, c;
    layout.split(index, b, k, ch, r, c);
    const BoxFrame f = boxes.frame(b, k, layout.height, layout.width);
    const scalar_t* plane = images + b * layout.stride_b + ch * layout.stride_c;
    acc_t value = 0;
    if (!f.valid) {
      value = 0;
    } else if (boxes.area) {
      value = area_value<acc_t>(plane, layout.stride_h, layout.stride_w, area_cell(f, layout, r, c));
    } else {
      const Taps tx = bilinear_taps(f.left + (c + 0.5) * f.cell_w, layout.width);
      const Taps ty = bilinear_taps(f.top + (r + 0.5) * f.cell_h, layout.height);
      value = bilinear_value<acc_t>(plane, layout.stride_h, layout.stride_w, ty, tx);
    }
    output[index] = static_cast<scalar_t>(value);
  }
}


template <typename acc_t>
struct AtomicAdd {
  acc_t* plane;
  __device__ __forceinline__ void operator()(int64_t index, acc_t value) const { gpuAtomicAdd(plane + index, value); }
};

// Sum of `value` over the block, valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = 0;
  if (warp == 0) {
    value = lane < static_cast<int>(blockDim.x / 32) ? shared[lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  __syncthreads();
  return value;
}

// grid.x: the box (b * count + k); grid.y: chunks of that box's cells. grad_boxes is (B, K, 4):
// d loss / d (normalised centre x, y, width, height in pixels).
template <typename scalar_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_output,
    const scalar_t* __restrict__ images,
    at::opmath_type<scalar_t>* __restrict__ grad_images,
    at::opmath_type<scalar_t>* __restrict__ grad_boxes,
    Layout layout,
    Boxes boxes,
    bool sides_grad) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t shared[kThreads / 32];
  const int64_t box = blockIdx.x, b = box / layout.count, k = box % layout.count;
  const BoxFrame f = boxes.frame(b, k, layout.height, layout.width);
  if (!f.valid) return;  // uniform across the block: no thread is left at a barrier
  const int64_t per_box = layout.channels * layout.rows * layout.cols;
  const int64_t plane_size = layout.height * layout.width;
  acc_t d_x = 0, d_y = 0, d_w = 0, d_h = 0;
  for (int64_t local = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; local < per_box;
       local += static_cast<int64_t>(blockDim.x) * gridDim.y) {
    const int64_t index = box * per_box + local;
    int64_t unused_b, unused_k, ch, r, c;
    layout.split(index, unused_b, unused_k, ch, r, c);
    const scalar_t* plane = images + b * layout.stride_b + ch * layout.stride_c;
    const acc_t grad = static_cast<acc_t>(grad_output[index]);
    const AtomicAdd<acc_t> add{grad_images ? grad_images + (b * layout.channels + ch) * plane_size : nullptr};
    if (boxes.area) {
      const AreaCell cell = area_cell(f, layout, r, c);
      if (add.plane) area_scatter(cell, grad, add);
      if (grad_boxes) {
        const AreaEdges<acc_t> e = area_edges<acc_t>(plane, layout.stride_h, layout.stride_w, cell);
        d_x += grad * (e.right - e.left);
        d_y += grad * (e.bottom - e.top);
        if (sides_grad) {
          const acc_t value = area_value<acc_t>(plane, layout.stride_h, layout.stride_w, cell);
          d_w += grad * (e.right * acc_t(edge_per_side(c + 1, layout.cols)) - e.left * acc_t(edge_per_side(c, layout.cols)) -
                         value * acc_t(1.0 / (f.cell_w * layout.cols)));
          d_h += grad * (e.bottom * acc_t(edge_per_side(r + 1, layout.rows)) - e.top * acc_t(edge_per_side(r, layout.rows)) -
                         value * acc_t(1.0 / (f.cell_h * layout.rows)));
        }
      }
    } else {
      const Taps tx = bilinear_taps(f.left + (c + 0.5) * f.cell_w, layout.width);
      const Taps ty = bilinear_taps(f.top + (r + 0.5) * f.cell_h, layout.height);
      if (add.plane) bilinear_scatter(ty, tx, grad, layout.width, add);
      if (grad_boxes) {
        acc_t slope_x, slope_y;
        bilinear_slopes<acc_t>(plane, layout.stride_h, layout.stride_w, ty, tx, slope_x, slope_y);
        d_x += grad * slope_x;
        d_y += grad * slope_y;
        d_w += grad * slope_x * acc_t(point_per_side(c, layout.cols));
        d_h += grad * slope_y * acc_t(point_per_side(r, layout.rows));
      }
    }
  }
  if (grad_boxes == nullptr) return;  // uniform across the block
  d_x = block_sum(d_x, shared);
  d_y = block_sum(d_y, shared);
  if (sides_grad) {
    d_w = block_sum(d_w, shared);
    d_h = block_sum(d_h, shared);
  }
  if (threadIdx.x == 0) {
    acc_t* out = grad_boxes + 4 * box;
    gpuAtomicAdd(out, d_x * acc_t(0.5 * layout.width));
    gpuAtomicAdd(out + 1, d_y * acc_t(0.5 * layout.height));
    if (sides_grad) {
      gpuAtomicAdd(out + 2, d_w);
      gpuAtomicAdd(out + 3, d_h);
    }
  }
}

int64_t blocks_for(int64_t work) {
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t cap = static_cast<int64_t>(multiprocessors) * 32;
  return std::max<int64_t>(1, std::min(wanted, cap));
}

void forward_cuda(const at::Tensor& images, const Boxes& boxes, at::Tensor& output) {
  const c10::cuda::CUDAGuard guard(images.device());
  const int64_t total = output.numel();
  const Layout layout = make_layout(images, boxes);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "glimpse_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        images.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), layout, boxes, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const Boxes& boxes,
    bool images_grad,
    bool centres_grad,
    bool sides_grad) {
  at::globalContext().alertNotDeterministic("glimpse_backward_cuda");
  const c10::cuda::CUDAGuard guard(images.device());
  const auto acc_type = at::toOpMathType(images.scalar_type());
  const bool boxes_grad = centres_grad || sides_grad;
  at::Tensor grad_images = images_grad ? at::zeros(images.sizes(), images.options().dtype(acc_type))
                                       : at::empty({0}, images.options());
  at::Tensor grad_boxes = boxes_grad ? at::zeros({images.size(0), boxes.count, 4}, images.options().dtype(acc_type))
                                     : at::empty({0}, images.options().dtype(acc_type));
  const int64_t box_count = images.size(0) * boxes.count;
  const int64_t per_box = images.size(1) * boxes.rows * boxes.cols;
  if (box_count > 0 && (images_grad || boxes_grad)) {
    TORCH_CHECK(
        box_count <= 2147483647, "glimpse backward (CUDA kernel): batch size * boxes must be < 2^31, got ", box_count);
    const at::Tensor grad = grad_output.contiguous();
    const Layout layout = make_layout(images, boxes);
    const int64_t chunks = std::min<int64_t>((per_box + kThreads - 1) / kThreads, 65535);
    const dim3 grid(static_cast<unsigned>(box_count), static_cast<unsigned>(chunks));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "glimpse_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(),
          images.const_data_ptr<scalar_t>(),
          images_grad ? grad_images.mutable_data_ptr<acc_t>() : nullptr,
          boxes_grad ? grad_boxes.mutable_data_ptr<acc_t>() : nullptr,
          layout,
          boxes,
          sides_grad);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {images_grad ? grad_images.to(images.scalar_type()) : grad_images, grad_boxes};
}

at::Tensor retina_glimpse_cuda(
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  return retina_glimpse_forward(
      &forward_cuda, c10::DeviceType::CUDA, images, locations, size, num_scales, scale_factor, mode, base_size);
}

std::tuple<at::Tensor, at::Tensor> retina_glimpse_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size,
    bool images_grad,
    bool locations_grad) {
  return retina_glimpse_backward(
      &backward_cuda,
      c10::DeviceType::CUDA,
      grad_output,
      images,
      locations,
      size,
      num_scales,
      scale_factor,
      mode,
      base_size,
      images_grad,
      locations_grad);
}

at::Tensor box_glimpse_cuda(
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode) {
  return box_glimpse_forward(&forward_cuda, c10::DeviceType::CUDA, images, centres, sides, size, mode);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> box_glimpse_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode,
    bool images_grad,
    bool centres_grad,
    bool sides_grad) {
  return box_glimpse_backward(
      &backward_cuda,
      c10::DeviceType::CUDA,
      grad_output,
      images,
      centres,
      sides,
      size,
      mode,
      images_grad,
      centres_grad,
      sides_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(gdram_ext, CUDA, m) {
  m.impl("retina_glimpse", &retina_glimpse_cuda);
  m.impl("retina_glimpse_backward", &retina_glimpse_backward_cuda);
  m.impl("box_glimpse", &box_glimpse_cuda);
  m.impl("box_glimpse_backward", &box_glimpse_backward_cuda);
}

}  // namespace gdram_ext
