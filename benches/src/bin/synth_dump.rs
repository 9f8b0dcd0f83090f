//! Writes the deterministic synthetic CLIP-like data set of
//! `glimpse_index::synthetic` as `base.npy` and `queries.npy`, so that
//! benchmarks against other systems (`benches/chroma_compare.py`) use exactly
//! the vectors the Rust benchmarks use.
//!
//! Usage: `synth_dump [--n 200000] [--dim 512] [--queries 1000] [--seed 2024] --out DIR`
//! (the defaults are `index_bench`'s, so the data equals its data).

use std::time::Instant;

use glimpse_index::synthetic::{SyntheticSpec, generate, to_npy};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    n: usize,
    dim: usize,
    queries: usize,
    seed: u64,
    out: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        n: 200_000,
        dim: 512,
        queries: 1000,
        seed: 2024,
        out: String::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(key) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| format!("missing value for {key}"))?;
        let bad = |e: std::num::ParseIntError| format!("{key} {val}: {e}");
        match key.as_str() {
            "--n" => a.n = val.parse().map_err(bad)?,
            "--dim" => a.dim = val.parse().map_err(bad)?,
            "--queries" => a.queries = val.parse().map_err(bad)?,
            "--seed" => a.seed = val.parse().map_err(bad)?,
            "--out" => a.out.clone_from(val),
            x => return Err(format!("unknown flag {x}").into()),
        }
    }
    if a.out.is_empty() {
        return Err("--out DIR is required".into());
    }
    if a.n == 0 || a.dim == 0 || a.queries == 0 {
        return Err("--n, --dim and --queries must be positive".into());
    }
    Ok(a)
}

fn write(path: &str, bytes: &[u8]) -> Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("writing {tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming {tmp} to {path}: {e}"))?;
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let t = Instant::now();
    let data = generate(&SyntheticSpec::clip_like(a.n, a.queries, a.dim, a.seed));
    std::fs::create_dir_all(&a.out).map_err(|e| format!("creating {}: {e}", a.out))?;
    write(
        &format!("{}/base.npy", a.out),
        &to_npy(&data.vectors, a.n, a.dim),
    )?;
    write(
        &format!("{}/queries.npy", a.out),
        &to_npy(&data.queries, a.queries, a.dim),
    )?;
    println!(
        "wrote {}/base.npy ({} x {}) and queries.npy ({}) in {:.1} s (seed {})",
        a.out,
        a.n,
        a.dim,
        a.queries,
        t.elapsed().as_secs_f64(),
        a.seed
    );
    Ok(())
}
