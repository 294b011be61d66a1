// Copyright 2021 Contributors to the Parsec project.
// SPDX-License-Identifier: Apache-2.0
pub mod parameters;
pub mod public;
pub mod schemes;
pub mod sensitive;
pub mod signature;
pub mod symmetric;
