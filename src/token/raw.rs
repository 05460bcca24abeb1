//! The only PKCS#11 calls made around cryptoki, for what cryptoki 0.12 cannot express:
//! mechanism codes it does not know.
//!
//! cryptoki 0.12.1 (the latest release) has no `MechanismType` for
//! CKM_AES_KEY_WRAP_KWP (0x210B, PKCS#11 3.0's name for RFC 5649 key wrap with padding),
//! silently drops such codes from `get_mechanism_list`, and offers no public constructor
//! for a standard mechanism it lacks (`MechanismType::new_vendor_defined` refuses codes
//! below CKM_VENDOR_DEFINED). Tokens written to PKCS#11 3.0, kryoptic among them, offer
//! RFC 5649 only under 0x210B, so the wrapped import needs these three calls raw:
//! C_GetMechanismList, C_GetMechanismInfo and C_UnwrapKey.
//!
//! How: the module's file is opened a second time with cryptoki-sys (the dlopen(3) of a
//! path already loaded returns the same library, so its state, C_Initialize included, is
//! the one cryptoki's context already set up) and `C_GetFunctionList` gives the module's
//! own function table. Session and object handles come from cryptoki and go back to it.
//! This module and src/xml/raw.rs (libxml2's c14n and serialisation as bytes) are the
//! crate's only `unsafe` code; each block says what it relies on.
#![allow(unsafe_code)]

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FLAGS, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_INFO, CK_MECHANISM_TYPE,
    CK_OBJECT_HANDLE, CK_ULONG,
};

/// CKM_AES_KEY_WRAP_PAD (PKCS#11 2.40): RFC 5649, the code SoftHSM 2.6.1 offers.
pub const CKM_AES_KEY_WRAP_PAD: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_PAD;
/// CKM_AES_KEY_WRAP_KWP (PKCS#11 3.0): RFC 5649 under its 3.0 name, the code kryoptic
/// offers.
pub const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_KWP;
/// The CKF_UNWRAP flag of CK_MECHANISM_INFO.
pub const CKF_UNWRAP: CK_FLAGS = cryptoki_sys::CKF_UNWRAP;

/// A PKCS#11 module's function table, reached beside cryptoki's context for the same
/// module. Only valid while that context is initialised: build one per job, from
/// [`super::Module`], and drop it with the job.
pub struct RawModule {
    // Keeps the library mapped while `list` points into it.
    _library: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
}

impl RawModule {
    /// The function table of the module at `path`, which cryptoki has already loaded and
    /// initialised in this process.
    pub fn open(path: &Path) -> Result<Self, CkError> {
        // SAFETY: loading a library runs its initialisers; this path was already loaded
        // by cryptoki (Module::open), so dlopen returns the same, already initialised
        // mapping and runs nothing new.
        let library =
            unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(CkError::LibraryLoading)?;
        let get = library
            .C_GetFunctionList
            .as_ref()
            .map_err(|_| CkError::MissingSymbol("C_GetFunctionList"))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to a table owned by the module,
        // valid while the library is mapped (we hold it in `_library`).
        Rv::from(unsafe { get(&mut list) }).into_result(Function::GetFunctionList)?;
        if list.is_null() {
            return Err(CkError::NullFunctionPointer);
        }
        Ok(Self {
            _library: library,
            list,
        })
    }

    fn table(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: checked non-null in `open`; the module keeps the table alive and
        // unchanged while it is loaded, which `_library` guarantees.
        unsafe { &*self.list }
    }

    /// Every mechanism code `slot` offers, including those cryptoki does not know.
    pub fn mechanism_list(&self, slot: Slot) -> Result<Vec<CK_MECHANISM_TYPE>, CkError> {
        let f = self
            .table()
            .C_GetMechanismList
            .ok_or(CkError::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: the size query: a NULL list and a valid count pointer.
        Rv::from(unsafe { f(slot.id(), std::ptr::null_mut(), &mut count) })
            .into_result(Function::GetMechanismList)?;
        let mut codes: Vec<CK_MECHANISM_TYPE> = vec![0; count as usize];
        // SAFETY: `codes` has room for `count` entries; the module writes at most that
        // many and updates `count` (CKR_BUFFER_TOO_SMALL if the list grew meanwhile).
        Rv::from(unsafe { f(slot.id(), codes.as_mut_ptr(), &mut count) })
            .into_result(Function::GetMechanismList)?;
        codes.truncate(count as usize);
        Ok(codes)
    }

    /// The CK_MECHANISM_INFO flags of `mechanism` on `slot`.
    pub fn mechanism_flags(
        &self,
        slot: Slot,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<CK_FLAGS, CkError> {
        let f = self
            .table()
            .C_GetMechanismInfo
            .ok_or(CkError::NullFunctionPointer)?;
        let mut info = CK_MECHANISM_INFO::default();
        // SAFETY: `info` is a valid, writable CK_MECHANISM_INFO.
        Rv::from(unsafe { f(slot.id(), mechanism, &mut info) })
            .into_result(Function::GetMechanismInfo)?;
        Ok(info.flags)
    }

    /// C_UnwrapKey on `session` with `mechanism` and no parameter (as RFC 5649 with the
    /// default IV takes it), `kek` as the unwrapping key, and `template` for the new key.
    pub fn unwrap_key(
        &self,
        session: &Session,
        mechanism: CK_MECHANISM_TYPE,
        kek: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle, CkError> {
        let f = self
            .table()
            .C_UnwrapKey
            .ok_or(CkError::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // Borrows the attribute values: `template` outlives the call.
        let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the session handle is cryptoki's, open on this module; every pointer
        // is valid for the call and the lengths match their buffers. PKCS#11 does not
        // write through pWrappedKey or pTemplate, whatever their C types say.
        let rv = unsafe {
            f(
                session.handle(),
                &mut mech,
                kek.handle(),
                wrapped.as_ptr() as *mut u8,
                wrapped.len() as CK_ULONG,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut handle,
            )
        };
        Rv::from(rv).into_result(Function::UnwrapKey)?;
        // SAFETY: a handle the module has just returned for a new object in this
        // session; handing it to cryptoki is what cryptoki itself would do.
        Ok(unsafe { ObjectHandle::new_from_raw(handle) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_rfc_5649_codes() {
        assert_eq!(CKM_AES_KEY_WRAP_PAD, 0x210A);
        assert_eq!(CKM_AES_KEY_WRAP_KWP, 0x210B);
    }
}
