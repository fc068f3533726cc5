// CPU kernels of the glimpse operators (retina_glimpse and box_glimpse share them; see glimpse.h).
//
// Forward: one at::parallel_for over (sample, box) pairs; each task computes its cells'
// bilinear taps (offsets and weights) or area coverages once, then every channel's cells. Float
// bilinear rows of unit x stride read each cell's two horizontal taps as one 64-bit pixel pair
// per tap row, four (SSE) or eight (AVX2 + FMA, chosen at run time) cells per step, or as
// contiguous vectors for cells of 1 or 2 pixels; channels_last images read each tap's channels as
// one run.
// Backward: one at::parallel_for over (sample, channel) image planes. A task is the only
// writer of its plane of the images' gradient (which it zeroes; area mode scatters separably)
// and of its own partial box gradients, and the partials are summed over channels in a fixed
// order afterwards: the CPU backward is deterministic, with no atomics.
#include "../glimpse.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace gdram_ext {
namespace {

// Element strides of a (B, C, H, W) tensor.
struct Strides4 {
  int64_t b, c, h, w;
  explicit Strides4(const at::Tensor& t) : b(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
};

void build_taps(std::vector<Taps>& taps, double start, double cell, int64_t size, int64_t extent) {
  taps.resize(size);
  for (int64_t k = 0; k < size; ++k) taps[k] = bilinear_taps(start + (static_cast<double>(k) + 0.5) * cell, extent);
}

// The bilinear taps of one axis in the accumulation type, as element offsets along that axis.
// A tap outside the image has its offset clamped to the image and is masked out, never summed.
template <typename acc_t>
struct AxisTaps {
  int64_t offset0, offset1;
  acc_t weight0, weight1;
  bool valid0, valid1;
};

template <typename acc_t>
void build_axis_taps(std::vector<AxisTaps<acc_t>>& out, const std::vector<Taps>& taps, int64_t stride) {
  out.resize(taps.size());
  for (size_t k = 0; k < taps.size(); ++k) {
    const Taps& t = taps[k];
    out[k] = AxisTaps<acc_t>{
        t.valid0 ? t.index * stride : 0,
        t.valid1 ? (t.index + 1) * stride : 0,
        acc_t(t.weight0),
        acc_t(t.weight1),
        t.valid0,
        t.valid1};
  }
}

// One bilinear cell of one image plane, any strides, taps possibly outside the image.
template <typename scalar_t, typename acc_t>
inline acc_t bilinear_cell(const scalar_t* plane, const AxisTaps<acc_t>& ty, const AxisTaps<acc_t>& tx) {
  acc_t value = 0;
  if (ty.valid0 && tx.valid0) value += ty.weight0 * tx.weight0 * acc_t(plane[ty.offset0 + tx.offset0]);
  if (ty.valid0 && tx.valid1) value += ty.weight0 * tx.weight1 * acc_t(plane[ty.offset0 + tx.offset1]);
  if (ty.valid1 && tx.valid0) value += ty.weight1 * tx.weight0 * acc_t(plane[ty.offset1 + tx.offset0]);
  if (ty.valid1 && tx.valid1) value += ty.weight1 * tx.weight1 * acc_t(plane[ty.offset1 + tx.offset1]);
  return value;
}

// The horizontal taps of one float box as pixel pairs, for SIMD rows of unit x stride: cell k
// reads the two adjacent pixels [offset[k], offset[k] + 1] of a row (offset clamped to [0, W - 2],
// so width >= 2), weighted by left[k] and right[k]; mask[2k], mask[2k + 1] keep the pixels that are
// taps inside the image (a tap outside reads zero, whatever the clamped pixel holds). Padded with
// empty cells to a multiple of 4.
struct PairTaps {
  std::vector<int64_t> offset;
  std::vector<float> left, right;
  std::vector<uint32_t> mask;
  // Per group of eight cells [8g, 8g + 8): 1 or 2 when their pairs are inside the image and start
  // 1 or 2 pixels apart (cells of 1 or 2 pixels), so that contiguous loads fetch them; else 0.
  std::vector<uint8_t> step;

  void build(const std::vector<Taps>& taps, int64_t width) {
    const size_t cells = (taps.size() + 3) / 4 * 4;
    offset.assign(cells, 0);
    left.assign(cells, 0.0f);
    right.assign(cells, 0.0f);
    mask.assign(2 * cells, 0u);
    for (size_t k = 0; k < taps.size(); ++k) {
      const Taps& t = taps[k];
      if (t.valid0 && t.valid1) {
        offset[k] = t.index;
        left[k] = static_cast<float>(t.weight0);
        right[k] = static_cast<float>(t.weight1);
        mask[2 * k] = mask[2 * k + 1] = ~0u;
      } else if (t.valid1) {  // index -1: only pixel 0, the pair's left pixel
        left[k] = static_cast<float>(t.weight1);
        mask[2 * k] = ~0u;
      } else if (t.valid0) {  // index W - 1: only the last pixel, the pair's right pixel
        offset[k] = width - 2;
        right[k] = static_cast<float>(t.weight0);
        mask[2 * k + 1] = ~0u;
      }
    }
    step.assign(taps.size() / 8, 0);
    for (size_t g = 0; g < step.size(); ++g) {
      const size_t c = 8 * g;
      for (const int64_t candidate : {1, 2}) {
        bool regular = true;
        for (size_t i = 0; i < 8 && regular; ++i) {
          regular = mask[2 * (c + i)] && mask[2 * (c + i) + 1] &&
              offset[c + i] == offset[c] + static_cast<int64_t>(i) * candidate;
        }
        if (regular) step[g] = static_cast<uint8_t>(candidate);
      }
    }
  }
};

#if defined(__SSE2__)
// [p[o0], p[o0 + 1], p[o1], p[o1 + 1]]: two cells' pixel pairs of one row.
inline __m128 load_pairs(const float* p, int64_t o0, int64_t o1) {
  const __m128 low = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p + o0)));
  return _mm_loadh_pi(low, reinterpret_cast<const __m64*>(p + o1));
}

// Cells [first, size) of one row of every channel, float, unit x stride, four cells per step: the
// pixel pairs of both tap rows (one row if `two_rows` is false) are blended vertically first,
// masked, split into left and right pixels, and blended horizontally; offsets, weights and masks
// are loaded once per four cells for all channels. Channel ch's row is written at out + ch * cells.
template <bool two_rows>
inline void bilinear_row_pairs(
    const float* sample,
    int64_t stride_c,
    int64_t channels,
    int64_t row0,
    int64_t row1,
    float weight0,
    float weight1,
    const PairTaps& taps,
    int64_t first,
    int64_t size,
    float* out,
    int64_t cells) {
  const __m128 wy0 = _mm_set1_ps(weight0), wy1 = _mm_set1_ps(weight1);
  for (int64_t c = first; c < size; c += 4) {
    const int64_t* o = taps.offset.data() + c;
    const int64_t o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3];
    const __m128 wl = _mm_loadu_ps(taps.left.data() + c), wr = _mm_loadu_ps(taps.right.data() + c);
    const __m128 m01 = _mm_loadu_ps(reinterpret_cast<const float*>(taps.mask.data() + 2 * c));
    const __m128 m23 = _mm_loadu_ps(reinterpret_cast<const float*>(taps.mask.data() + 2 * c + 4));
    const int64_t count = std::min<int64_t>(4, size - c);
    for (int64_t ch = 0; ch < channels; ++ch) {
      const float* top = sample + ch * stride_c + row0;
      __m128 v01 = _mm_mul_ps(wy0, load_pairs(top, o0, o1));
      __m128 v23 = _mm_mul_ps(wy0, load_pairs(top, o2, o3));
      if constexpr (two_rows) {
        const float* bottom = sample + ch * stride_c + row1;
        v01 = _mm_add_ps(v01, _mm_mul_ps(wy1, load_pairs(bottom, o0, o1)));
        v23 = _mm_add_ps(v23, _mm_mul_ps(wy1, load_pairs(bottom, o2, o3)));
      }
      v01 = _mm_and_ps(v01, m01);
      v23 = _mm_and_ps(v23, m23);
      const __m128 lefts = _mm_shuffle_ps(v01, v23, _MM_SHUFFLE(2, 0, 2, 0));
      const __m128 rights = _mm_shuffle_ps(v01, v23, _MM_SHUFFLE(3, 1, 3, 1));
      const __m128 value = _mm_add_ps(_mm_mul_ps(wl, lefts), _mm_mul_ps(wr, rights));
      float* dst = out + ch * cells + c;
      if (count == 4) {
        _mm_storeu_ps(dst, value);
      } else {
        alignas(16) float lanes[4];
        _mm_store_ps(lanes, value);
        for (int64_t i = 0; i < count; ++i) dst[i] = lanes[i];
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// AVX2 + FMA code, compiled for those instructions whatever the build flags and run only where
// the CPU has them (cpu_has_avx2_fma), as ATen does for its own CPU kernels.
#define GDRAM_CPU_AVX2 1
#define GDRAM_TARGET_AVX2 __attribute__((target("avx2,fma")))

// The pixel pairs of four cells of one row: [p[o0], p[o0 + 1], ..., p[o3], p[o3 + 1]].
GDRAM_TARGET_AVX2 inline __m256 load_pairs4(const float* p, const int64_t* o) {
  const __m128 low = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p + o[0]))),
                                  reinterpret_cast<const __m64*>(p + o[1]));
  const __m128 high = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p + o[2]))),
                                   reinterpret_cast<const __m64*>(p + o[3]));
  return _mm256_insertf128_ps(_mm256_castps128_ps256(low), high, 1);
}

// Swaps the middle 64-bit quarters: cells 0 1 2 3 4 5 6 7 <-> 0 1 4 5 2 3 6 7.
GDRAM_TARGET_AVX2 inline __m256 swap_middle_quarters(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Eight cells of 1-pixel pitch, pairs inside the image (PairTaps::step 1): their left pixels are the
// eight pixels from the first cell's offset, their right pixels the eight after that.
template <bool two_rows>
GDRAM_TARGET_AVX2 inline void bilinear_cells8_unit(
    const float* sample,
    int64_t stride_c,
    int64_t channels,
    int64_t row0,
    int64_t row1,
    __m256 wy0,
    __m256 wy1,
    const PairTaps& taps,
    int64_t c,
    float* out,
    int64_t cells) {
  const __m256 wl = _mm256_loadu_ps(taps.left.data() + c), wr = _mm256_loadu_ps(taps.right.data() + c);
  const int64_t o = taps.offset[c];
  for (int64_t ch = 0; ch < channels; ++ch) {
    const float* top = sample + ch * stride_c + row0 + o;
    __m256 lefts = _mm256_mul_ps(wy0, _mm256_loadu_ps(top));
    __m256 rights = _mm256_mul_ps(wy0, _mm256_loadu_ps(top + 1));
    if constexpr (two_rows) {
      const float* bottom = sample + ch * stride_c + row1 + o;
      lefts = _mm256_fmadd_ps(wy1, _mm256_loadu_ps(bottom), lefts);
      rights = _mm256_fmadd_ps(wy1, _mm256_loadu_ps(bottom + 1), rights);
    }
    _mm256_storeu_ps(out + ch * cells + c, _mm256_fmadd_ps(wr, rights, _mm256_mul_ps(wl, lefts)));
  }
}

// Eight cells of 2-pixel pitch, pairs inside the image (PairTaps::step 2): the 16 pixels from the
// first cell's offset, split into even (left) and odd (right) ones within 128-bit lanes, which
// orders the cells as the pixel pairs do (weights `wl`, `wr` already in that order).
template <bool two_rows>
GDRAM_TARGET_AVX2 inline void bilinear_cells8_even(
    const float* sample,
    int64_t stride_c,
    int64_t channels,
    int64_t row0,
    int64_t row1,
    __m256 wy0,
    __m256 wy1,
    __m256 wl,
    __m256 wr,
    int64_t o,
    int64_t c,
    float* out,
    int64_t cells) {
  for (int64_t ch = 0; ch < channels; ++ch) {
    const float* top = sample + ch * stride_c + row0 + o;
    __m256 low = _mm256_mul_ps(wy0, _mm256_loadu_ps(top));
    __m256 high = _mm256_mul_ps(wy0, _mm256_loadu_ps(top + 8));
    if constexpr (two_rows) {
      const float* bottom = sample + ch * stride_c + row1 + o;
      low = _mm256_fmadd_ps(wy1, _mm256_loadu_ps(bottom), low);
      high = _mm256_fmadd_ps(wy1, _mm256_loadu_ps(bottom + 8), high);
    }
    const __m256 lefts = _mm256_shuffle_ps(low, high, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 rights = _mm256_shuffle_ps(low, high, _MM_SHUFFLE(3, 1, 3, 1));
    const __m256 value = _mm256_fmadd_ps(wr, rights, _mm256_mul_ps(wl, lefts));
    _mm256_storeu_ps(out + ch * cells + c, swap_middle_quarters(value));
  }
}

// bilinear_row_pairs eight cells per step: cells [0, size / 8 * 8), then the SSE steps for the
// rest. The pixel pairs of cells 0-3 and 4-7 fill two registers; splitting them into left and right
// pixels within 128-bit lanes orders the cells 0 1 4 5 2 3 6 7, so the weights are permuted into
// that order and the result back.
template <bool two_rows>
GDRAM_TARGET_AVX2 void bilinear_row_pairs_avx2(
    const float* sample,
    int64_t stride_c,
    int64_t channels,
    int64_t row0,
    int64_t row1,
    float weight0,
    float weight1,
    const PairTaps& taps,
    int64_t size,
    float* out,
    int64_t cells) {
  const __m256 wy0 = _mm256_set1_ps(weight0), wy1 = _mm256_set1_ps(weight1);
  const int64_t wide = size / 8 * 8;
  for (int64_t c = 0; c < wide; c += 8) {
    const int64_t* o = taps.offset.data() + c;
    const int step = taps.step[c / 8];
    if (step == 1) {
      bilinear_cells8_unit<two_rows>(sample, stride_c, channels, row0, row1, wy0, wy1, taps, c, out, cells);
      continue;
    }
    const __m256 wl = swap_middle_quarters(_mm256_loadu_ps(taps.left.data() + c));
    const __m256 wr = swap_middle_quarters(_mm256_loadu_ps(taps.right.data() + c));
    if (step == 2) {
      bilinear_cells8_even<two_rows>(sample, stride_c, channels, row0, row1, wy0, wy1, wl, wr, o[0], c, out, cells);
      continue;
    }
    const __m256 m03 = _mm256_loadu_ps(reinterpret_cast<const float*>(taps.mask.data() + 2 * c));
    const __m256 m47 = _mm256_loadu_ps(reinterpret_cast<const float*>(taps.mask.data() + 2 * c + 8));
    for (int64_t ch = 0; ch < channels; ++ch) {
      const float* top = sample + ch * stride_c + row0;
      __m256 v03 = _mm256_mul_ps(wy0, load_pairs4(top, o));
      __m256 v47 = _mm256_mul_ps(wy0, load_pairs4(top, o + 4));
      if constexpr (two_rows) {
        const float* bottom = sample + ch * stride_c + row1;
        v03 = _mm256_fmadd_ps(wy1, load_pairs4(bottom, o), v03);
        v47 = _mm256_fmadd_ps(wy1, load_pairs4(bottom, o + 4), v47);
      }
      v03 = _mm256_and_ps(v03, m03);
      v47 = _mm256_and_ps(v47, m47);
      const __m256 lefts = _mm256_shuffle_ps(v03, v47, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 rights = _mm256_shuffle_ps(v03, v47, _MM_SHUFFLE(3, 1, 3, 1));
      const __m256 value = _mm256_fmadd_ps(wr, rights, _mm256_mul_ps(wl, lefts));
      _mm256_storeu_ps(out + ch * cells + c, swap_middle_quarters(value));
    }
  }
  bilinear_row_pairs<two_rows>(sample, stride_c, channels, row0, row1, weight0, weight1, taps, wide, size, out, cells);
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// bilinear_row_pairs with AVX2 + FMA where the CPU has them.
template <bool two_rows>
inline void bilinear_row_pairs_best(
    const float* sample,
    int64_t stride_c,
    int64_t channels,
    int64_t row0,
    int64_t row1,
    float weight0,
    float weight1,
    const PairTaps& taps,
    int64_t size,
    float* out,
    int64_t cells) {
#if defined(GDRAM_CPU_AVX2)
  if (cpu_has_avx2_fma()) {
    bilinear_row_pairs_avx2<two_rows>(sample, stride_c, channels, row0, row1, weight0, weight1, taps, size, out, cells);
    return;
  }
#endif
  bilinear_row_pairs<two_rows>(sample, stride_c, channels, row0, row1, weight0, weight1, taps, 0, size, out, cells);
}

// One row of cells of every channel through the pixel-pair rows: both tap rows, the one inside the
// image, or zeros.
inline void bilinear_row_float(
    const float* sample, const Strides4& in, int64_t channels, const Taps& ty, const PairTaps& taps, int64_t size,
    float* out, int64_t cells) {
  const int64_t row0 = ty.index * in.h;
  const float w0 = static_cast<float>(ty.weight0), w1 = static_cast<float>(ty.weight1);
  if (ty.valid0 && ty.valid1) {
    bilinear_row_pairs_best<true>(sample, in.c, channels, row0, row0 + in.h, w0, w1, taps, size, out, cells);
  } else if (ty.valid0) {
    bilinear_row_pairs_best<false>(sample, in.c, channels, row0, row0, w0, 0.0f, taps, size, out, cells);
  } else if (ty.valid1) {
    bilinear_row_pairs_best<false>(sample, in.c, channels, row0 + in.h, row0 + in.h, w1, 0.0f, taps, size, out, cells);
  } else {
    for (int64_t ch = 0; ch < channels; ++ch) std::fill(out + ch * cells, out + ch * cells + size, 0.0f);
  }
}
#endif

// Cells [first, last) of one row of every channel, any type and strides, one cell at a time.
template <typename scalar_t, typename acc_t>
inline void bilinear_cells(
    const scalar_t* sample,
    int64_t stride_c,
    int64_t channels,
    const AxisTaps<acc_t>& ty,
    const std::vector<AxisTaps<acc_t>>& taps_x,
    int64_t first,
    int64_t last,
    scalar_t* out,
    int64_t cells) {
  for (int64_t c = first; c < last; ++c) {
    for (int64_t ch = 0; ch < channels; ++ch) {
      out[ch * cells + c] = static_cast<scalar_t>(bilinear_cell(sample + ch * stride_c, ty, taps_x[c]));
    }
  }
}

#if defined(__SSE2__)
// A float cell of 3 or 4 channels stored pixel-major, all four taps inside the image: each tap's
// channels in one 16-byte load (for 3 channels the fourth lane reads the next pixel's first value,
// which stays in the tensor as `p + 4 <= end` is checked by the caller, and is never stored).
inline void bilinear_cell_pixel_sse(
    const float* p00, const float* p01, const float* p10, const float* p11,
    float w00, float w01, float w10, float w11, int64_t channels, float* out, int64_t cells) {
  const __m128 value = _mm_add_ps(
      _mm_add_ps(_mm_mul_ps(_mm_set1_ps(w00), _mm_loadu_ps(p00)), _mm_mul_ps(_mm_set1_ps(w01), _mm_loadu_ps(p01))),
      _mm_add_ps(_mm_mul_ps(_mm_set1_ps(w10), _mm_loadu_ps(p10)), _mm_mul_ps(_mm_set1_ps(w11), _mm_loadu_ps(p11))));
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, value);
  for (int64_t ch = 0; ch < channels; ++ch) out[ch * cells] = lanes[ch];
}
#endif

// Cells of one row of every channel when a pixel's channels are adjacent in memory (channels_last):
// a cell whose four taps are inside the image reads each tap's channels as one run, with the
// cell's four weights computed once for all channels; other cells go through bilinear_cell.
template <typename scalar_t, typename acc_t>
inline void bilinear_cells_pixel_major(
    const scalar_t* sample,
    const scalar_t* end,
    int64_t channels,
    const AxisTaps<acc_t>& ty,
    const std::vector<AxisTaps<acc_t>>& taps_x,
    scalar_t* out,
    int64_t cells) {
  for (size_t c = 0; c < taps_x.size(); ++c) {
    const AxisTaps<acc_t>& tx = taps_x[c];
    scalar_t* cell_out = out + c;
    if (!(ty.valid0 && ty.valid1 && tx.valid0 && tx.valid1)) {
      for (int64_t ch = 0; ch < channels; ++ch) cell_out[ch * cells] = static_cast<scalar_t>(bilinear_cell(sample + ch, ty, tx));
      continue;
    }
    const scalar_t* p00 = sample + ty.offset0 + tx.offset0;
    const scalar_t* p01 = sample + ty.offset0 + tx.offset1;
    const scalar_t* p10 = sample + ty.offset1 + tx.offset0;
    const scalar_t* p11 = sample + ty.offset1 + tx.offset1;
    const acc_t w00 = ty.weight0 * tx.weight0, w01 = ty.weight0 * tx.weight1;
    const acc_t w10 = ty.weight1 * tx.weight0, w11 = ty.weight1 * tx.weight1;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<scalar_t, float>) {
      if ((channels == 3 || channels == 4) && p11 + 4 <= end) {
        bilinear_cell_pixel_sse(p00, p01, p10, p11, w00, w01, w10, w11, channels, cell_out, cells);
        continue;
      }
    }
#endif
    for (int64_t ch = 0; ch < channels; ++ch) {
      cell_out[ch * cells] = static_cast<scalar_t>(
          w00 * acc_t(p00[ch]) + w01 * acc_t(p01[ch]) + w10 * acc_t(p10[ch]) + w11 * acc_t(p11[ch]));
    }
  }
}

// One row of cells of every channel of a sample, any type and strides (float images of unit x
// stride take bilinear_row_float); channel ch's row is written at out + ch * cells.
template <typename scalar_t, typename acc_t>
inline void bilinear_row(
    const scalar_t* sample,
    const scalar_t* end,
    const Strides4& in,
    int64_t channels,
    const AxisTaps<acc_t>& ty,
    const std::vector<AxisTaps<acc_t>>& taps_x,
    scalar_t* out,
    int64_t cells) {
  if (in.c == 1 && channels > 1) {
    bilinear_cells_pixel_major(sample, end, channels, ty, taps_x, out, cells);
    return;
  }
  bilinear_cells(sample, in.c, channels, ty, taps_x, 0, static_cast<int64_t>(taps_x.size()), out, cells);
}

// The cells of one box along one axis, for area mode: cell k covers pixels
// [first[k], first[k] + count[k]) with the coverages coverage[offset[k] ...], each a fraction
// of the cell's side (so that the products of both axes' coverages average the image).
template <typename acc_t>
struct AreaAxis {
  std::vector<int64_t> first, count, offset;
  std::vector<acc_t> coverage;

  void build(double start, double cell, int64_t size, int64_t extent) {
    first.resize(size);
    count.resize(size);
    offset.resize(size);
    coverage.clear();
    for (int64_t k = 0; k < size; ++k) {
      const double cell_start = start + static_cast<double>(k) * cell;
      const Span span = area_span(cell_start, cell, extent);
      first[k] = span.first;
      count[k] = span.last - span.first;
      offset[k] = static_cast<int64_t>(coverage.size());
      for (int64_t i = span.first; i < span.last; ++i) {
        coverage.push_back(acc_t(area_overlap(cell_start, cell, i) / cell));
      }
    }
  }
  // Pixels [lo, hi) that some cell covers (cells are laid out in increasing order).
  int64_t lo() const {
    for (size_t k = 0; k < count.size(); ++k) {
      if (count[k] > 0) return first[k];
    }
    return 0;
  }
  int64_t hi() const {
    for (size_t k = count.size(); k-- > 0;) {
      if (count[k] > 0) return first[k] + count[k];
    }
    return 0;
  }
};

// rows[x - lo] += weight * row[x] for x in [lo, hi): the contiguous case apart, so that it vectorises.
template <typename scalar_t, typename acc_t>
inline void add_scaled_row(acc_t* rows, const scalar_t* row, int64_t stride_w, int64_t lo, int64_t hi, acc_t weight) {
  if (stride_w == 1) {
    const scalar_t* src = row + lo;
    for (int64_t x = 0; x < hi - lo; ++x) rows[x] += weight * acc_t(src[x]);
    return;
  }
  for (int64_t x = lo; x < hi; ++x) rows[x - lo] += weight * acc_t(row[x * stride_w]);
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& images, const Boxes& boxes, at::Tensor& output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = images.size(0), channels = images.size(1), height = images.size(2), width = images.size(3);
  const int64_t rows = boxes.rows, cols = boxes.cols, count = boxes.count, cells = rows * cols;
  const Strides4 in(images);
  const scalar_t* image_data = images.const_data_ptr<scalar_t>();
  scalar_t* out_data = output.mutable_data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / (channels * cells));
  // Float images whose rows are unit-stride (not channels_last) take the pixel-pair SIMD rows.
  const bool pair_rows = in.w == 1 && width >= 2 && !(in.c == 1 && channels > 1);
  // One past the last element of the images, for loads that read a little beyond a pixel.
  const scalar_t* image_end =
      image_data + 1 + (batch - 1) * in.b + (channels - 1) * in.c + (height - 1) * in.h + (width - 1) * in.w;

  at::parallel_for(0, batch * count, grain, [&](int64_t begin, int64_t end) {
    std::vector<Taps> taps_x, taps_y;
    std::vector<AxisTaps<acc_t>> axis_taps_x, axis_taps_y;
    PairTaps pair_taps;
    AreaAxis<acc_t> axis_x, axis_y;
    std::vector<acc_t> sums;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / count, k = task % count;
      const BoxFrame f = boxes.frame(b, k, height, width);
      scalar_t* out_box = out_data + task * channels * cells;
      const scalar_t* sample = image_data + b * in.b;
      if (!f.valid) {
        std::fill(out_box, out_box + channels * cells, scalar_t(0));
        continue;
      }
      if (!boxes.area) {
        build_taps(taps_x, f.left, f.cell_w, cols, width);
        build_taps(taps_y, f.top, f.cell_h, rows, height);
#if defined(__SSE2__)
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (pair_rows) {
            pair_taps.build(taps_x, width);
            for (int64_t r = 0; r < rows; ++r) {
              bilinear_row_float(sample, in, channels, taps_y[r], pair_taps, cols, out_box + r * cols, cells);
            }
            continue;
          }
        }
#endif
        build_axis_taps(axis_taps_x, taps_x, in.w);
        build_axis_taps(axis_taps_y, taps_y, in.h);
        for (int64_t r = 0; r < rows; ++r) {
          bilinear_row(sample, image_end, in, channels, axis_taps_y[r], axis_taps_x, out_box + r * cols, cells);
        }
      } else {
        // Separable: first the coverage-weighted sum of each cell row's image rows, then
        // each cell's coverage-weighted sum along that.
        axis_x.build(f.left, f.cell_w, cols, width);
        axis_y.build(f.top, f.cell_h, rows, height);
        const int64_t lo = axis_x.lo(), hi = axis_x.hi();
        sums.resize(std::max<int64_t>(hi - lo, 1));
        for (int64_t ch = 0; ch < channels; ++ch) {
          const scalar_t* plane = sample + ch * in.c;
          scalar_t* out_plane = out_box + ch * cells;
          for (int64_t r = 0; r < rows; ++r) {
            std::fill(sums.begin(), sums.end(), acc_t(0));
            for (int64_t j = 0; j < axis_y.count[r]; ++j) {
              const acc_t wy = axis_y.coverage[axis_y.offset[r] + j];
              add_scaled_row(sums.data(), plane + (axis_y.first[r] + j) * in.h, in.w, lo, hi, wy);
            }
            for (int64_t c = 0; c < cols; ++c) {
              const acc_t* wx = axis_x.coverage.data() + axis_x.offset[c];
              const acc_t* values = sums.data() + (axis_x.first[c] - lo);
              acc_t value = 0;
              for (int64_t i = 0; i < axis_x.count[c]; ++i) value += wx[i] * values[i];
              out_plane[r * cols + c] = static_cast<scalar_t>(value);
            }
          }
        }
      }
    }
  });
}

void forward_cpu(const at::Tensor& images, const Boxes& boxes, at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "glimpse_forward_cpu", [&] {
    forward_kernel<scalar_t>(images, boxes, output);
  });
}

template <typename acc_t>
struct PlainAdd {
  acc_t* plane;
  void operator()(int64_t index, acc_t value) const { plane[index] += value; }
};

// What one (image plane, box) adds to its box's gradient: d loss / d (centre x, y in pixels, width,
// height in pixels), accumulated in the accumulation type.
template <typename acc_t>
struct BoxSlopes {
  acc_t x = 0, y = 0, w = 0, h = 0;
};

// Area backward of one box of one image plane, separably (the cell means are sums of
// coverage_y(y) * coverage_x(x) * pixel over the cells' rectangles, coverages divided by the cell's side):
//   rows[r][x] = sum_c grad[r][c] * coverage_x[c](x)           (d loss / d "row r's x profile")
//   grad_image[y][x] += sum_r coverage_y[r](y) * rows[r][x]
//   d_y = sum_r sum_x rows[r][x] * (pixel[bottom_r][x] - pixel[top_r][x]) / cell_h
//   d_x = sum_c sum_y cols[c][y] * (pixel[y][right_c] - pixel[y][left_c]) / cell_w,
//         cols[c][y] = sum_r grad[r][c] * coverage_y[r](y)
// where top_r / bottom_r (left_c / right_c) are the pixels at the edges of cell row r (column c),
// as in area_edges. With the sides' gradient, each edge moves by edge_per_side of its index, and the
// cells' 1 / side normalisation contributes - sum(grad * value) / side:
//   d_h = sum_r sum_x rows[r][x] * (pixel[bottom_r][x] * e(r + 1) - pixel[top_r][x] * e(r)) / cell_h - dot / side_h
//   dot = sum_r sum_y coverage_y[r](y) sum_x rows[r][x] * pixel[y][x]
// and likewise d_w. Cost: about the footprint's pixel count a few times, instead of once per cell.
template <typename scalar_t, typename acc_t>
struct AreaBackward {
  AreaAxis<acc_t> axis_x, axis_y;
  std::vector<acc_t> rows, cols;

  void run(
      const scalar_t* plane,
      const Strides4& in,
      const scalar_t* grad,
      const BoxFrame& f,
      int64_t n_rows,
      int64_t n_cols,
      int64_t height,
      int64_t width,
      acc_t* grad_plane,
      bool slopes,
      bool side_slopes,
      BoxSlopes<acc_t>& out) {
    axis_x.build(f.left, f.cell_w, n_cols, width);
    axis_y.build(f.top, f.cell_h, n_rows, height);
    const int64_t lo_x = axis_x.lo(), span_x = axis_x.hi() - lo_x;
    const int64_t lo_y = axis_y.lo(), span_y = axis_y.hi() - lo_y;
    if (span_x <= 0 || span_y <= 0) return;
    rows.assign(n_rows * span_x, acc_t(0));
    for (int64_t r = 0; r < n_rows; ++r) {
      acc_t* row = rows.data() + r * span_x - lo_x;
      for (int64_t c = 0; c < n_cols; ++c) {
        const acc_t g = static_cast<acc_t>(grad[r * n_cols + c]);
        const acc_t* wx = axis_x.coverage.data() + axis_x.offset[c];
        for (int64_t i = 0; i < axis_x.count[c]; ++i) row[axis_x.first[c] + i] += g * wx[i];
      }
    }
    if (grad_plane) {
      for (int64_t r = 0; r < n_rows; ++r) {
        const acc_t* row = rows.data() + r * span_x;
        for (int64_t j = 0; j < axis_y.count[r]; ++j) {
          const acc_t wy = axis_y.coverage[axis_y.offset[r] + j];
          acc_t* dst = grad_plane + (axis_y.first[r] + j) * width + lo_x;
          for (int64_t x = 0; x < span_x; ++x) dst[x] += wy * row[x];
        }
      }
    }
    if (!slopes) return;
    acc_t dot = 0;
    if (side_slopes) {
      for (int64_t r = 0; r < n_rows; ++r) {
        const acc_t* row = rows.data() + r * span_x;
        for (int64_t j = 0; j < axis_y.count[r]; ++j) {
          const int64_t y = axis_y.first[r] + j;
          acc_t sum = 0;
          for (int64_t x = 0; x < span_x; ++x) sum += row[x] * pixel<acc_t>(plane, in.h, in.w, y, lo_x + x, true);
          dot += axis_y.coverage[axis_y.offset[r] + j] * sum;
        }
      }
    }
    acc_t sum_y = 0, side_y = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      const double top_edge = f.top + static_cast<double>(r) * f.cell_h;
      const int64_t top = pixel_at(top_edge, height), bottom = pixel_at(top_edge + f.cell_h, height);
      const acc_t* row = rows.data() + r * span_x;
      acc_t below_sum = 0, above_sum = 0;
      for (int64_t x = 0; x < span_x; ++x) {
        below_sum += row[x] * pixel<acc_t>(plane, in.h, in.w, bottom, lo_x + x, bottom >= 0);
        above_sum += row[x] * pixel<acc_t>(plane, in.h, in.w, top, lo_x + x, top >= 0);
      }
      sum_y += below_sum - above_sum;
      side_y += below_sum * acc_t(edge_per_side(r + 1, n_rows)) - above_sum * acc_t(edge_per_side(r, n_rows));
    }
    cols.assign(n_cols * span_y, acc_t(0));
    for (int64_t r = 0; r < n_rows; ++r) {
      const acc_t* wy = axis_y.coverage.data() + axis_y.offset[r];
      for (int64_t c = 0; c < n_cols; ++c) {
        const acc_t g = static_cast<acc_t>(grad[r * n_cols + c]);
        acc_t* col = cols.data() + c * span_y + (axis_y.first[r] - lo_y);
        for (int64_t j = 0; j < axis_y.count[r]; ++j) col[j] += g * wy[j];
      }
    }
    acc_t sum_x = 0, side_x = 0;
    for (int64_t c = 0; c < n_cols; ++c) {
      const double left_edge = f.left + static_cast<double>(c) * f.cell_w;
      const int64_t left = pixel_at(left_edge, width), right = pixel_at(left_edge + f.cell_w, width);
      const acc_t* col = cols.data() + c * span_y;
      acc_t after_sum = 0, before_sum = 0;
      for (int64_t y = 0; y < span_y; ++y) {
        after_sum += col[y] * pixel<acc_t>(plane, in.h, in.w, lo_y + y, right, right >= 0);
        before_sum += col[y] * pixel<acc_t>(plane, in.h, in.w, lo_y + y, left, left >= 0);
      }
      sum_x += after_sum - before_sum;
      side_x += after_sum * acc_t(edge_per_side(c + 1, n_cols)) - before_sum * acc_t(edge_per_side(c, n_cols));
    }
    out.x += sum_x * acc_t(1.0 / f.cell_w);
    out.y += sum_y * acc_t(1.0 / f.cell_h);
    if (side_slopes) {
      out.w += side_x * acc_t(1.0 / f.cell_w) - dot * acc_t(1.0 / (f.cell_w * static_cast<double>(n_cols)));
      out.h += side_y * acc_t(1.0 / f.cell_h) - dot * acc_t(1.0 / (f.cell_h * static_cast<double>(n_rows)));
    }
  }
};

template <typename scalar_t>
void backward_kernel(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const Boxes& boxes,
    at::Tensor* grad_images,
    at::Tensor* grad_partial,
    bool sides_grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  const int64_t rows = boxes.rows, cols = boxes.cols, count = boxes.count, cells = rows * cols;
  const Strides4 in(images);
  const scalar_t* image_data = images.const_data_ptr<scalar_t>();
  const scalar_t* grad_data = grad_output.const_data_ptr<scalar_t>();
  acc_t* grad_image_data = grad_images ? grad_images->mutable_data_ptr<acc_t>() : nullptr;
  double* partial = grad_partial ? grad_partial->mutable_data_ptr<double>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, count * cells));

  at::parallel_for(0, images.size(0) * channels, grain, [&](int64_t begin, int64_t end) {
    std::vector<Taps> taps_x, taps_y;
    AreaBackward<scalar_t, acc_t> area_backward;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / channels, ch = task % channels;
      const scalar_t* plane = image_data + b * in.b + ch * in.c;
      // The task is the only writer of its gradient plane: it zeroes the plane itself (the
      // gradient is allocated uninitialised), so that the plane is in cache for its scatter.
      acc_t* grad_plane = grad_image_data ? grad_image_data + task * height * width : nullptr;
      if (grad_plane) std::fill(grad_plane, grad_plane + height * width, acc_t(0));
      const PlainAdd<acc_t> add{grad_plane};
      for (int64_t k = 0; k < count; ++k) {
        const BoxFrame f = boxes.frame(b, k, height, width);
        if (!f.valid) continue;
        const scalar_t* grad_cells = grad_data + ((b * count + k) * channels + ch) * cells;
        BoxSlopes<acc_t> s;
        if (boxes.area) {
          area_backward.run(
              plane, in, grad_cells, f, rows, cols, height, width, grad_plane, partial != nullptr, sides_grad, s);
        } else {
          build_taps(taps_x, f.left, f.cell_w, cols, width);
          build_taps(taps_y, f.top, f.cell_h, rows, height);
          for (int64_t r = 0; r < rows; ++r) {
            const acc_t along_h = acc_t(point_per_side(r, rows));
            for (int64_t c = 0; c < cols; ++c) {
              const acc_t grad = static_cast<acc_t>(grad_cells[r * cols + c]);
              if (grad_plane) bilinear_scatter(taps_y[r], taps_x[c], grad, width, add);
              if (partial) {
                acc_t slope_x, slope_y;
                bilinear_slopes<acc_t>(plane, in.h, in.w, taps_y[r], taps_x[c], slope_x, slope_y);
                s.x += grad * slope_x;
                s.y += grad * slope_y;
                if (sides_grad) {
                  s.w += grad * slope_x * acc_t(point_per_side(c, cols));
                  s.h += grad * slope_y * along_h;
                }
              }
            }
          }
        }
        if (partial) {
          double* box = partial + (task * count + k) * 4;
          box[0] = static_cast<double>(s.x) * 0.5 * static_cast<double>(width);
          box[1] = static_cast<double>(s.y) * 0.5 * static_cast<double>(height);
          box[2] = static_cast<double>(s.w);
          box[3] = static_cast<double>(s.h);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const Boxes& boxes,
    bool images_grad,
    bool centres_grad,
    bool sides_grad) {
  const auto acc_type = at::toOpMathType(images.scalar_type());
  const bool boxes_grad = centres_grad || sides_grad;
  // Uninitialised: every task zeroes the planes it owns before scattering into them.
  at::Tensor grad_images = images_grad ? at::empty(images.sizes(), images.options().dtype(acc_type))
                                       : at::empty({0}, images.options());
  at::Tensor grad_partial = boxes_grad
      ? at::zeros({images.size(0), images.size(1), boxes.count, 4}, images.options().dtype(at::kDouble))
      : at::empty({0}, images.options().dtype(at::kDouble));
  if (images.numel() > 0 && boxes.count > 0 && (images_grad || boxes_grad)) {
    const at::Tensor grad = grad_output.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "glimpse_backward_cpu", [&] {
      backward_kernel<scalar_t>(
          grad, images, boxes, images_grad ? &grad_images : nullptr, boxes_grad ? &grad_partial : nullptr, sides_grad);
    });
  } else if (images_grad) {
    grad_images.zero_();
  }
  return {
      images_grad ? grad_images.to(images.scalar_type()) : grad_images,
      boxes_grad ? grad_partial.sum(1) : grad_partial};
}

at::Tensor retina_glimpse_cpu(
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  return retina_glimpse_forward(
      &forward_cpu, c10::DeviceType::CPU, images, locations, size, num_scales, scale_factor, mode, base_size);
}

std::tuple<at::Tensor, at::Tensor> retina_glimpse_backward_cpu(
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
      &backward_cpu,
      c10::DeviceType::CPU,
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

at::Tensor box_glimpse_cpu(
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode) {
  return box_glimpse_forward(&forward_cpu, c10::DeviceType::CPU, images, centres, sides, size, mode);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> box_glimpse_backward_cpu(
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
      &backward_cpu,
      c10::DeviceType::CPU,
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

TORCH_LIBRARY_IMPL(gdram_ext, CPU, m) {
  m.impl("retina_glimpse", &retina_glimpse_cpu);
  m.impl("retina_glimpse_backward", &retina_glimpse_backward_cpu);
  m.impl("box_glimpse", &box_glimpse_cpu);
  m.impl("box_glimpse_backward", &box_glimpse_backward_cpu);
}

}  // namespace gdram_ext
