use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};

use super::*;
use crate::cpu::vcpu::Vcpu;

#[test]
fn msrs_to_save_keeps_known_ranges_with_the_tsc_first_and_its_deadline_last() {
    let listed = [
        0xc000_0082,
        MSR_IA32_TSC_DEADLINE,
        0x480, // a VMX capability: left out
        0x4b56_4d01,
        msr::MSR_IA32_TSC,
        0x4000_0000, // Hyper-V: left out
        0x802,       // x2APIC: left out
        0x277,
        0x277,
    ];
    assert_eq!(
        msrs_to_save(&listed),
        vec![
            msr::MSR_IA32_TSC,
            0x277,
            msr::MSR_MTRR_DEF_TYPE,
            0x4b56_4d01,
            0xc000_0082,
            MSR_IA32_TSC_DEADLINE
        ]
    );
    assert_eq!(msrs_to_save(&[]), vec![msr::MSR_MTRR_DEF_TYPE]);
}

#[test]
fn a_zero_tsc_deadline_is_saved_as_the_tsc_and_a_set_one_is_kept() {
    let value = |index, data| MsrValue { index, data };
    let mut msrs = vec![
        value(msr::MSR_IA32_TSC, 1_000_000),
        value(msr::MSR_LSTAR, 0),
        value(MSR_IA32_TSC_DEADLINE, 0),
    ];
    keep_tsc_deadline(&mut msrs);
    assert_eq!(msrs[2], value(MSR_IA32_TSC_DEADLINE, 1_000_000));
    assert_eq!(msrs[1], value(msr::MSR_LSTAR, 0));
    let mut armed = vec![
        value(msr::MSR_IA32_TSC, 1_000_000),
        value(MSR_IA32_TSC_DEADLINE, 2_000_000),
    ];
    keep_tsc_deadline(&mut armed);
    assert_eq!(armed[1].data, 2_000_000);
    // Without the TSC there is nothing to set it to.
    let mut alone = vec![value(MSR_IA32_TSC_DEADLINE, 0)];
    keep_tsc_deadline(&mut alone);
    assert_eq!(alone[0].data, 0);
}

#[test]
fn fpu_state_round_trips_through_kvm_fpu() {
    let mut fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        last_ip: 0xdead_beef,
        ..Default::default()
    };
    fpu.xmm[15][3] = 7;
    fpu.fpr[7][15] = 9;
    let state = FpuState::from(&fpu);
    assert_eq!(kvm_fpu::from(&state), fpu);
}

#[test]
fn vcpu_state_round_trips_through_json() {
    let mut state = VcpuState {
        id: 3,
        msrs: vec![MsrValue {
            index: 0x10,
            data: u64::MAX,
        }],
        xsave: Some(vec![0x5a5a_5a5a; XSAVE_WORDS]),
        ..Default::default()
    };
    state.regs.rip = 0xffff_ffff_8100_0000;
    state.sregs.cr3 = 0x1000;
    state.lapic.regs[0x20] = 0x12;
    state.vcpu_events.exception.nr = 14;
    state.cpuid.push(kvm_cpuid_entry2 {
        function: 1,
        ecx: 0x8000_0000,
        ..Default::default()
    });
    let text = serde_json::to_vec(&state).unwrap();
    let back: VcpuState = serde_json::from_slice(&text).unwrap();
    assert_eq!(back.id, 3);
    assert_eq!(back.regs, state.regs);
    assert_eq!(back.sregs, state.sregs);
    assert_eq!(back.lapic, state.lapic);
    assert_eq!(back.vcpu_events, state.vcpu_events);
    assert_eq!(back.cpuid, state.cpuid);
    assert_eq!(back.msrs, state.msrs);
    assert_eq!(back.xsave, state.xsave);
    assert_eq!(back.fpu, state.fpu);
}

/// A VM with an irqchip and PIT, and its boot vCPU 0, as the VMM builds
/// them; `None` where /dev/kvm cannot be opened.
fn boot_vcpu() -> Option<(Kvm, kvm_ioctls::VmFd, Vcpu)> {
    let kvm = Kvm::new().ok()?;
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .unwrap();
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let caps = std::sync::Arc::new(VcpuCaps::detect(&kvm).unwrap());
    let vcpu = Vcpu::new(&vm, 0, 1, &supported, &[], 0x100_0000, caps).unwrap();
    Some((kvm, vm, vcpu))
}

/// The state saved from a booting vCPU goes into a vCPU of another VM and
/// comes out the same (the TSC and its deadline aside: they run on).
#[test]
fn a_vcpu_saved_and_restored_in_another_vm_reads_back_the_same() {
    let Some((kvm, _vm, mut vcpu)) = boot_vcpu() else {
        eprintln!("skipped: no /dev/kvm");
        return;
    };
    let caps = VcpuCaps::detect(&kvm).unwrap();
    assert!(caps.msrs.contains(&msr::MSR_IA32_TSC), "{:x?}", caps.msrs);
    complete_pending_io(vcpu.fd_mut()).unwrap();
    let saved = save(vcpu.fd(), 0, &caps).unwrap();
    assert_eq!(saved.regs.rip, 0x100_0000);
    assert!(saved.msrs.iter().any(|m| m.index == msr::MSR_LSTAR));

    let (_kvm2, _vm2, fresh) = boot_vcpu().unwrap();
    let mut state = saved.clone();
    state.regs.rip = 0x200_0000;
    restore(fresh.fd(), &state, &caps).unwrap();
    let again = save(fresh.fd(), 0, &caps).unwrap();
    assert_eq!(again.regs, state.regs);
    assert_eq!(again.sregs, state.sregs);
    assert_eq!(again.fpu, state.fpu);
    assert_eq!(again.mp_state, state.mp_state);
    let without_tsc = |s: &VcpuState| -> Vec<MsrValue> {
        s.msrs
            .iter()
            .copied()
            .filter(|m| ![msr::MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE].contains(&m.index))
            .collect()
    };
    assert_eq!(without_tsc(&again), without_tsc(&state));
}

/// An MSR that KVM refuses names itself, before any guest runs.
#[test]
fn a_refused_msr_is_named() {
    let Some((kvm, _vm, vcpu)) = boot_vcpu() else {
        eprintln!("skipped: no /dev/kvm");
        return;
    };
    let caps = VcpuCaps::detect(&kvm).unwrap();
    let mut state = save(vcpu.fd(), 0, &caps).unwrap();
    // Not an MSR at all.
    state.msrs.push(MsrValue {
        index: 0xdead_0000,
        data: 1,
    });
    let (_kvm2, _vm2, fresh) = boot_vcpu().unwrap();
    let err = restore(fresh.fd(), &state, &caps).unwrap_err();
    assert_eq!(err.to_string(), "KVM refused MSR 0xdead0000");
    state.msrs.pop();
    state.xsave = Some(vec![0; 3]);
    let err = restore(
        fresh.fd(),
        &state,
        &VcpuCaps {
            xsave: true,
            ..caps.clone()
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "the xsave area has 3 words, not 1024");
    if !caps.xsave {
        assert!(matches!(
            restore(fresh.fd(), &state, &caps),
            Err(VcpuStateError::NoXsave)
        ));
    }
}
