use super::*;
use crate::model::rows_kernel::quick_gelu;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The kernel's answer computed independently: the codes re-derived from the inputs, the sum
/// in i64, then the same float operations.
fn reference(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    act: Epilogue,
) -> Vec<f32> {
    let quant = |row: &[f32]| -> (Vec<i64>, f32) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let codes = row
            .iter()
            .map(|&v| {
                if max > 0.0 {
                    (v * (127.0 / max)).round_ties_even() as i64
                } else {
                    0
                }
            })
            .collect();
        (codes, max / 127.0)
    };
    let wq: Vec<(Vec<i64>, f32)> = (0..n)
        .map(|j| {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = max / 127.0;
            let codes = row
                .iter()
                .map(|&v| if s > 0.0 { (v / s).round() as i64 } else { 0 })
                .collect();
            (codes, s)
        })
        .collect();
    let mut out = Vec::with_capacity(m * n);
    for r in 0..m {
        let (xq, sx) = quant(&x[r * k..(r + 1) * k]);
        for (j, (wc, sw)) in wq.iter().enumerate() {
            let sum: i64 = xq.iter().zip(wc).map(|(a, b)| a * b).sum();
            let mut v = sum as f32 * (sx * sw);
            if let Some(b) = bias {
                v += b[j];
            }
            out.push(match act {
                Epilogue::None => v,
                Epilogue::QuickGelu => quick_gelu(v),
            });
        }
    }
    out
}

fn run(
    kernel: Int8Kernel,
    x: &[f32],
    m: usize,
    w: &Int8Panels,
    bias: Option<&[f32]>,
    act: Epilogue,
) -> Vec<f32> {
    let q = QuantizedRows::new(kernel, x, m, w.k());
    let mut out = vec![f32::NAN; m * w.n()];
    rows_times_int8(kernel, &q, m, w, bias, act, &mut out);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Every build gives every output the reference's bits, for shapes that exercise every tail:
/// rows past a tile (4 or 12), columns past a panel or half panel, inner sizes of every
/// residue of a dword.
#[test]
fn every_build_gives_the_exact_integer_result() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 7, 13),
        (2, 33, 8),
        (5, 512, 512),
        (4, 70, 31),
        (7, 129, 64),
        (13, 37, 42),
        (25, 17, 9),
        (6, 48, 2048),
        (3, 40, 0),
    ] {
        let x = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let packed = Int8Panels::quantize(&w, n, k);
        for (b, act) in [
            (None, Epilogue::None),
            (Some(&bias[..]), Epilogue::None),
            (Some(&bias[..]), Epilogue::QuickGelu),
        ] {
            let want = reference(&x, m, &w, n, k, b, act);
            for kernel in Int8Kernel::available() {
                let got = run(kernel, &x, m, &packed, b, act);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{kernel:?} {m}x{n}x{k} bias {} {act:?}",
                    b.is_some()
                );
            }
        }
    }
}

/// A row gets the same bits whatever rows share its call, for every tile size.
#[test]
fn every_build_keeps_a_rows_bits_in_any_batch() {
    let (n, k, m) = (70, 515, 29);
    let w = values(n * k, 11);
    let bias = values(n, 12);
    let x = values(m * k, 13);
    let packed = Int8Panels::quantize(&w, n, k);
    for kernel in Int8Kernel::available() {
        let all = bits(&run(
            kernel,
            &x,
            m,
            &packed,
            Some(&bias),
            Epilogue::QuickGelu,
        ));
        for rows in 1..=14 {
            for r0 in [0, 3, m - rows] {
                let xs = &x[r0 * k..(r0 + rows) * k];
                let got = run(kernel, xs, rows, &packed, Some(&bias), Epilogue::QuickGelu);
                assert_eq!(
                    bits(&got),
                    all[r0 * n..(r0 + rows) * n].to_vec(),
                    "{kernel:?} rows {r0}..{}",
                    r0 + rows
                );
            }
        }
    }
}

/// Quantizing both sides moves a product by no more than its two roundings allow: each code
/// is within half a step of its value, so `|y - x·w| ≤ Σ (|x|·sw + |w|·sx)/2 + k·sx·sw/4`.
#[test]
fn the_product_stays_within_the_rounding_bound() {
    let (m, n, k) = (9, 40, 300);
    let x = values(m * k, 21);
    let w = values(n * k, 22);
    let packed = Int8Panels::quantize(&w, n, k);
    let got = run(Int8Kernel::get(), &x, m, &packed, None, Epilogue::None);
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let sx = f64::from(xr.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0;
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let sw = f64::from(packed.scales[j]);
            let exact: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let bound: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| {
                    (f64::from(a).abs() * sw + f64::from(b).abs() * sx) / 2.0 + sx * sw / 4.0
                })
                .sum();
            let err = (f64::from(got[r * n + j]) - exact).abs();
            assert!(
                err <= bound * 1.001 + 1e-6,
                "row {r} col {j}: {err} > {bound}"
            );
        }
    }
}

/// The packed codes sit where the kernel reads them, the offsets cancel the activations'
/// `+128`, and a zero row of weights packs to zero codes with scale 0.
#[test]
fn packing_places_codes_and_offsets() {
    let (n, k) = (35, 10);
    let mut w = values(n * k, 31);
    w[3 * k..4 * k].fill(0.0);
    let packed = Int8Panels::quantize(&w, n, k);
    for j in 0..n {
        let s = packed.scales[j];
        let mut sum = 0;
        for kk in 0..k {
            let code = packed.code(j, kk);
            sum += i32::from(code);
            let want = if s > 0.0 {
                (w[j * k + kk] / s).round() as i8
            } else {
                0
            };
            assert_eq!(code, want, "output {j} input {kk}");
        }
        assert_eq!(packed.offsets[j], -128 * sum);
        // The padding inputs of the last dword are zero codes.
        for kk in k..packed.groups * GROUP {
            assert_eq!(packed.code(j, kk), 0);
        }
    }
    assert_eq!(packed.scales[3], 0.0);
    assert!(packed.offsets[n..].iter().all(|&o| o == 0));
}

/// A row holding a NaN or an infinity gives NaN outputs, as the f32 kernel would, rather than
/// finite ones from codes that cannot represent it; the other rows are untouched.
#[test]
fn a_non_finite_row_gives_nan_outputs() {
    let (m, n, k) = (3, 33, 20);
    let mut x = values(m * k, 41);
    x[k + 4] = f32::NAN;
    x[2 * k + 7] = f32::INFINITY;
    let w = values(n * k, 42);
    let packed = Int8Panels::quantize(&w, n, k);
    for kernel in Int8Kernel::available() {
        let got = run(kernel, &x, m, &packed, None, Epilogue::None);
        assert!(got[..n].iter().all(|v| v.is_finite()), "{kernel:?}");
        assert!(got[n..].iter().all(|v| v.is_nan()), "{kernel:?}");
    }
}

/// A row of values too small for any code to tell apart (below `127 / f32::MAX`, where the
/// inverse scale overflows) and an all-zero row both give exact zero products (without the
/// guard the tiny row's codes all saturate to 127 and its outputs come out nonzero); a normal
/// row beside them is unaffected.
#[test]
fn vanishing_rows_give_zero_products() {
    let (m, n, k) = (3, 33, 20);
    let mut x = values(m * k, 51);
    x[..k].fill(1e-38);
    x[k..2 * k].fill(0.0);
    let w = values(n * k, 52);
    let packed = Int8Panels::quantize(&w, n, k);
    let want = reference(&x[2 * k..], 1, &w, n, k, None, Epilogue::None);
    for kernel in Int8Kernel::available() {
        let got = run(kernel, &x, m, &packed, None, Epilogue::None);
        assert!(
            got[..2 * n].iter().all(|v| v.to_bits() == 0),
            "{kernel:?}: {got:?}"
        );
        assert_eq!(bits(&got[2 * n..]), bits(&want), "{kernel:?}: normal row");
    }
}
