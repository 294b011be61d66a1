//! Layer 4, building: unified kernel images from the systemd stub, signed for Secure Boot and
//! for PCR policies (`.pcrsig` uses the prediction layer).

pub mod uki;
