//! Every piece of generated protobuf code, in modules that mirror the proto packages.
