//! A tiny, non-executing decoder for the pickles the original Python pipeline stored.
//!
//! The pipeline stored, per row, `pickle.dumps((image, embedding))` where `image` is a path (`str`)
//! or, in an older variant, the image itself (base64 `str` or `bytes`), and `embedding` is a 1-D
//! numpy array. Unpickling with Python would execute arbitrary code named by the file, so this module
//! interprets only the opcodes such a pickle uses (protocols 2 to 5) on a small stack machine and
//! accepts only the handful of numpy globals that rebuild an array. Anything else is an error: the
//! decoder never calls anything, never allocates more than a small multiple of its input, and
//! never panics.
//!
//! (About 740 lines, over the ~700 the house keeps to: one stack machine whose opcode `match`
//! reads best whole; its tests are in `tests.rs`.)

use std::collections::HashMap;
use std::rc::Rc;

/// Upper bound on the values held at once (the stack and every stack saved under a MARK,
/// together) and on the memo; real pipeline pickles need about 25 entries.
const MAX_ENTRIES: usize = 4096;

/// Longest numpy dtype spelling accepted (`<f4`, `float32`): a dtype string is copied into
/// every array that uses it, so an unbounded one would multiply memory.
const MAX_DTYPE_CHARS: usize = 16;

/// Bytes a decode may allocate beyond what it reads: strings and bytes copied out of the input
/// total at most its length, but `_codecs.encode` builds new bytes from a (memoized, reusable)
/// string, so the total of everything allocated is capped at a small multiple of the input.
const ALLOC_SLACK: usize = 64 << 10;

/// Upper bound on tuple nesting; real pipeline pickles nest 3 deep. Keeps drops non-recursive-deep.
const MAX_DEPTH: u32 = 32;

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The input ended inside an opcode or before `STOP`.
    #[error("pickle truncated at byte {offset}")]
    Truncated {
        /// Byte offset where more input was needed.
        offset: usize,
    },
    /// An opcode outside the accepted subset.
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its offset.
        offset: usize,
    },
    /// A protocol other than 2..=5.
    #[error("unsupported pickle protocol {0} (accepted: 2 to 5)")]
    UnsupportedProtocol(u8),
    /// A global that is not one of the numpy array-rebuilding functions.
    #[error(
        "refusing pickle global `{module}.{name}` (only numpy array reconstruction is accepted)"
    )]
    ForbiddenGlobal {
        /// The module.
        module: String,
        /// The attribute.
        name: String,
    },
    /// Protocol-5 out-of-band buffers, which the pipeline never used.
    #[error("pickle uses out-of-band buffers, which are not supported")]
    OutOfBand,
    /// The pickle is well-formed but its structure is not what the pipeline wrote.
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the opcode that failed.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// The top-level value is not `(image, embedding)`.
    #[error("expected a pickled tuple (image, embedding), found {0}")]
    UnexpectedValue(String),
    /// A numpy dtype other than little-endian float16/32/64.
    #[error("unsupported numpy dtype {0} (accepted: <f2, <f4, <f8)")]
    UnsupportedDtype(String),
    /// A big-endian float array.
    #[error("big-endian numpy array ({0}) is not supported; convert with arr.astype('<f4')")]
    BigEndian(String),
    /// An array that is not 1-D.
    #[error("embedding array has shape {0:?}, expected a 1-D array")]
    NotOneDimensional(Vec<i64>),
    /// Array data whose length does not match shape times item size.
    #[error("embedding array data is {found} bytes, shape and dtype need {expected}")]
    DataLength {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
}

/// The image half of a pipeline record, as pickled.
#[derive(Debug, Clone, PartialEq)]
pub enum PickledImage {
    /// A Python `str`: a path, or base64 of the image in the old variant.
    Str(String),
    /// A Python `bytes`/`bytearray`: the image or its base64 text.
    Bytes(Vec<u8>),
    /// Python `None`.
    None,
}

/// One decoded `output` cell of the original pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutput {
    /// First tuple element.
    pub image: PickledImage,
    /// Second tuple element, converted to `f32`.
    pub embedding: Vec<f32>,
}

/// The globals a pipeline pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    /// `numpy.core.multiarray._reconstruct` (or `numpy._core...`): allocates an empty array.
    Reconstruct,
    /// `numpy.ndarray`: the class argument of `_reconstruct`.
    Ndarray,
    /// `numpy.dtype`.
    Dtype,
    /// `numpy.core.numeric._frombuffer` (protocol 5 in-band arrays).
    FromBuffer,
    /// `_codecs.encode`: protocol 2 spells bytes as `encode(latin1_str, 'latin1')`.
    CodecsEncode,
}

fn resolve_global(module: &str, name: &str) -> Result<Global, PickleError> {
    match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Ok(Global::Reconstruct)
        }
        ("numpy", "ndarray") => Ok(Global::Ndarray),
        ("numpy", "dtype") => Ok(Global::Dtype),
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Ok(Global::FromBuffer),
        ("_codecs", "encode") => Ok(Global::CodecsEncode),
        _ => Err(PickleError::ForbiddenGlobal {
            module: module.chars().take(100).collect(),
            name: name.chars().take(100).collect(),
        }),
    }
}

/// A numpy dtype under construction.
#[derive(Debug, Clone, PartialEq)]
struct Dtype {
    /// `f2`, `f4` or `f8` as given to `numpy.dtype`.
    kind: String,
    /// `<`, `>`, `=`, `|`, from the type string or the BUILD state.
    byteorder: char,
}

/// A decoded numpy array.
#[derive(Debug, Clone, PartialEq)]
struct Array {
    dtype: Dtype,
    shape: Vec<i64>,
    data: Rc<Vec<u8>>,
}

/// Values on the machine's stack. Containers are reference-counted so that memo reuse cannot
/// blow up memory (a "billion laughs" pickle stays linear in size).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<String>),
    Bytes(Rc<Vec<u8>>),
    /// Items and nesting depth.
    Tuple(Rc<Vec<Value>>, u32),
    Global(Global),
    Dtype(Dtype),
    /// `_reconstruct(ndarray, (0,), b'b')`: an array waiting for its BUILD state.
    EmptyArray,
    Array(Array),
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(..) => "tuple",
            Value::Global(_) => "global",
            Value::Dtype(_) => "numpy.dtype",
            Value::EmptyArray => "empty numpy.ndarray",
            Value::Array(_) => "numpy.ndarray",
        }
    }
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<Vec<Value>>,
    /// Values in the stacks saved under MARKs (`stack.len()` plus this is bounded).
    marked: usize,
    memo: HashMap<u32, Value>,
    /// Bytes that string and bytes values may still allocate (see [`ALLOC_SLACK`]).
    alloc_left: usize,
}

/// Decodes one `output` cell: `pickle.dumps((image, numpy_1d_float_array))`.
pub fn decode_pipeline_output(input: &[u8]) -> Result<PipelineOutput, PickleError> {
    let value = Machine::new(input).run()?;
    let Value::Tuple(items, _) = &value else {
        return Err(PickleError::UnexpectedValue(value.describe().to_owned()));
    };
    let [image, array] = items.as_slice() else {
        return Err(PickleError::UnexpectedValue(format!(
            "a tuple of {} elements",
            items.len()
        )));
    };
    let image = match image {
        Value::Str(s) => PickledImage::Str(s.as_ref().clone()),
        Value::Bytes(b) => PickledImage::Bytes(b.as_ref().clone()),
        Value::None => PickledImage::None,
        other => {
            return Err(PickleError::UnexpectedValue(format!(
                "({}, …) as first element",
                other.describe()
            )));
        }
    };
    let Value::Array(array) = array else {
        return Err(PickleError::UnexpectedValue(format!(
            "(…, {}) as second element",
            array.describe()
        )));
    };
    Ok(PipelineOutput {
        image,
        embedding: array_to_f32(array)?,
    })
}

fn array_to_f32(array: &Array) -> Result<Vec<f32>, PickleError> {
    let spelled = format!("{}{}", array.dtype.byteorder, array.dtype.kind);
    match array.dtype.byteorder {
        '<' => {}
        '>' => return Err(PickleError::BigEndian(spelled)),
        _ => return Err(PickleError::UnsupportedDtype(spelled)),
    }
    let item = match array.dtype.kind.as_str() {
        "f2" => 2,
        "f4" => 4,
        "f8" => 8,
        _ => return Err(PickleError::UnsupportedDtype(spelled)),
    };
    let [len] = array.shape.as_slice() else {
        return Err(PickleError::NotOneDimensional(array.shape.clone()));
    };
    let len =
        usize::try_from(*len).map_err(|_| PickleError::NotOneDimensional(array.shape.clone()))?;
    let expected = len.saturating_mul(item);
    if array.data.len() != expected {
        return Err(PickleError::DataLength {
            expected,
            found: array.data.len(),
        });
    }
    let data = array.data.as_slice();
    Ok(match item {
        2 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        4 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    })
}

/// Parses a numpy dtype spelling such as `f4` or `<f4`.
fn parse_dtype(spelled: &str) -> Dtype {
    let mut chars = spelled.chars();
    match chars.next() {
        Some(c @ ('<' | '>' | '=' | '|')) => Dtype {
            kind: chars.as_str().to_owned(),
            byteorder: c,
        },
        // numpy normalises a bare `f4` to native order; the BUILD state spells it out.
        _ => Dtype {
            kind: spelled.to_owned(),
            byteorder: '=',
        },
    }
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            marked: 0,
            memo: HashMap::new(),
            alloc_left: input.len().saturating_mul(2).saturating_add(ALLOC_SLACK),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.op_at,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_len(&mut self) -> Result<usize, PickleError> {
        let b = self.take(8)?;
        let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        // A length beyond the input can never be satisfied: report truncation, not a huge alloc.
        usize::try_from(n).map_err(|_| PickleError::Truncated {
            offset: self.input.len(),
        })
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.input[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let line = self.take(nl)?;
        self.pos += 1;
        std::str::from_utf8(line).map_err(|_| self.malformed("GLOBAL name is not UTF-8"))
    }

    /// Takes `n` bytes from the allocation budget.
    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        self.alloc_left = self
            .alloc_left
            .checked_sub(n)
            .ok_or_else(|| self.malformed("values larger than a small multiple of the input"))?;
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() + self.marked >= MAX_ENTRIES {
            return Err(self.malformed("too many values on the stacks"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<&Value, PickleError> {
        self.stack
            .last()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let saved = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        self.marked -= saved.len();
        Ok(std::mem::replace(&mut self.stack, saved))
    }

    fn memo_put(&mut self, index: u32) -> Result<(), PickleError> {
        if self.memo.len() >= MAX_ENTRIES && !self.memo.contains_key(&index) {
            return Err(self.malformed("memo too large"));
        }
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.malformed(format!("memo entry {index} does not exist")))?;
        self.push(v)
    }

    fn push_str(&mut self, bytes: &[u8]) -> Result<(), PickleError> {
        let s = std::str::from_utf8(bytes).map_err(|_| self.malformed("str is not valid UTF-8"))?;
        self.charge(s.len())?;
        self.push(Value::Str(Rc::new(s.to_owned())))
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), PickleError> {
        self.charge(bytes.len())?;
        self.push(Value::Bytes(Rc::new(bytes.to_vec())))
    }

    fn tuple_of(&mut self, n: usize) -> Result<(), PickleError> {
        if self.stack.len() < n {
            return Err(self.malformed("stack underflow"));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push_tuple(items)
    }

    fn push_tuple(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let depth = 1 + items
            .iter()
            .map(|v| match v {
                Value::Tuple(_, d) => *d,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(self.malformed("tuples nested too deeply"));
        }
        self.push(Value::Tuple(Rc::new(items), depth))
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(PickleError::UnsupportedProtocol(proto));
                    }
                }
                // FRAME: framing only batches reads; the content is an ordinary opcode stream.
                0x95 => {
                    let len = self.u64_len()?;
                    if len > self.input.len() - self.pos {
                        return Err(PickleError::Truncated {
                            offset: self.input.len(),
                        });
                    }
                }
                b'.' => {
                    let v = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err(self.malformed("values left on the stack at STOP"));
                    }
                    return Ok(v);
                }
                b'(' => {
                    if self.marks.len() >= MAX_ENTRIES {
                        return Err(self.malformed("too many MARKs"));
                    }
                    let current = std::mem::take(&mut self.stack);
                    self.marked += current.len();
                    self.marks.push(current);
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                // LONG1: little-endian two's complement, as Python writes ints beyond 32 bits.
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(self.malformed("integer wider than 64 bits"));
                    }
                    let bytes = self.take(n)?;
                    let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    self.push(Value::Float(v))?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                0x8d => {
                    let n = self.u64_len()?;
                    let b = self.take(n)?;
                    self.push_str(b)?;
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push_bytes(b)?;
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push_bytes(b)?;
                }
                0x8e | 0x96 => {
                    let n = self.u64_len()?;
                    let b = self.take(n)?;
                    self.push_bytes(b)?;
                }
                0x97 | 0x98 => return Err(PickleError::OutOfBand),
                b')' => self.push_tuple(Vec::new())?,
                0x85 => self.tuple_of(1)?,
                0x86 => self.tuple_of(2)?,
                0x87 => self.tuple_of(3)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                0x94 => {
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed("memo too large"))?;
                    self.memo_put(index)?;
                }
                b'q' => {
                    let index = u32::from(self.u8()?);
                    self.memo_put(index)?;
                }
                b'r' => {
                    let index = self.u32()?;
                    self.memo_put(index)?;
                }
                b'h' => {
                    let index = u32::from(self.u8()?);
                    self.memo_get(index)?;
                }
                b'j' => {
                    let index = self.u32()?;
                    self.memo_get(index)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(module, name)?;
                    self.push(Value::Global(g))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(self.malformed("STACK_GLOBAL needs two str"));
                    };
                    let g = resolve_global(module, name)?;
                    self.push(Value::Global(g))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    if let Value::Bytes(b) = &v {
                        self.charge(b.len())?;
                    }
                    self.push(v)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    let v = self.build(obj, state)?;
                    self.push(v)?;
                }
                opcode => {
                    return Err(PickleError::UnknownOpcode {
                        opcode,
                        offset: self.op_at,
                    });
                }
            }
        }
    }

    /// Applies one of the accepted globals; it only ever builds a value, never runs anything.
    fn reduce(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = callable else {
            return Err(self.malformed(format!("REDUCE on a {}", callable.describe())));
        };
        let Value::Tuple(args, _) = args else {
            return Err(self.malformed("REDUCE arguments are not a tuple"));
        };
        match (g, args.as_slice()) {
            (Global::Reconstruct, [Value::Global(Global::Ndarray), Value::Tuple(..), _]) => {
                Ok(Value::EmptyArray)
            }
            (Global::Dtype, [Value::Str(spelled), ..]) => {
                if spelled.chars().count() > MAX_DTYPE_CHARS {
                    return Err(PickleError::UnsupportedDtype(format!(
                        "a dtype spelled in {} characters",
                        spelled.chars().count()
                    )));
                }
                Ok(Value::Dtype(parse_dtype(spelled)))
            }
            (Global::CodecsEncode, [Value::Str(text), Value::Str(encoding)])
                if encoding.as_str() == "latin1" || encoding.as_str() == "latin-1" =>
            {
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| self.malformed("latin1 text with a character above U+00FF"))?;
                Ok(Value::Bytes(Rc::new(bytes)))
            }
            (Global::FromBuffer, [Value::Bytes(data), Value::Dtype(dtype), shape, order]) => {
                if !matches!(order, Value::Str(o) if o.as_str() == "C") {
                    return Err(self.malformed("_frombuffer with an order other than 'C'"));
                }
                Ok(Value::Array(Array {
                    dtype: dtype.clone(),
                    shape: self.shape(shape)?,
                    data: Rc::clone(data),
                }))
            }
            (g, _) => Err(self.malformed(format!("unexpected arguments for {g:?}"))),
        }
    }

    fn shape(&self, v: &Value) -> Result<Vec<i64>, PickleError> {
        let Value::Tuple(dims, _) = v else {
            return Err(self.malformed("array shape is not a tuple"));
        };
        dims.iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 => Ok(*n),
                _ => Err(self.malformed("array shape holds a non-integer")),
            })
            .collect()
    }

    /// `BUILD`: numpy's `__setstate__` for a dtype or an array, interpreted declaratively.
    fn build(&self, obj: Value, state: Value) -> Result<Value, PickleError> {
        let Value::Tuple(state, _) = state else {
            return Err(self.malformed("BUILD state is not a tuple"));
        };
        match obj {
            // (version, byteorder, subdtype, names, fields, elsize, alignment, flags[, metadata])
            Value::Dtype(mut dtype) => {
                let [_, Value::Str(order), sub, names, fields, ..] = state.as_slice() else {
                    return Err(self.malformed("unexpected numpy.dtype state"));
                };
                if ![sub, names, fields]
                    .iter()
                    .all(|v| matches!(v, Value::None))
                {
                    return Err(PickleError::UnsupportedDtype(
                        "structured or sub-array dtype".to_owned(),
                    ));
                }
                dtype.byteorder = order.chars().next().unwrap_or('=');
                Ok(Value::Dtype(dtype))
            }
            // (version, shape, dtype, is_fortran, data); very old numpy omits the version.
            Value::EmptyArray => {
                let (shape, dtype, data) = match state.as_slice() {
                    [Value::Int(_), shape, Value::Dtype(d), _, data]
                    | [shape, Value::Dtype(d), _, data] => (shape, d, data),
                    _ => return Err(self.malformed("unexpected numpy.ndarray state")),
                };
                let Value::Bytes(data) = data else {
                    return Err(self.malformed(format!(
                        "array data is a {}, not bytes (object arrays are not supported)",
                        data.describe()
                    )));
                };
                Ok(Value::Array(Array {
                    dtype: dtype.clone(),
                    shape: self.shape(shape)?,
                    data: Rc::clone(data),
                }))
            }
            other => Err(self.malformed(format!("BUILD on a {}", other.describe()))),
        }
    }
}

#[cfg(test)]
mod tests;
