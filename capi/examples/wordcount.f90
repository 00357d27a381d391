! Word count through Spillway's C ABI, in Fortran 2008 (iso_c_binding): every maximal run of
! ASCII letters with the number of its occurrences, "word<TAB>count", in byte order.
!
!   wordcount_f OUTPUT_FILE INPUT...
!
! Values are counts: a job with 64-bit values (spillway_job_new_u64) whose values Spillway
! sums itself (SPILLWAY_COMBINE_SUM), emitted with spillway_emit_u64 (uint64_t is
! integer(c_int64_t) here: counts stay far below 2^63). The callbacks run concurrently on
! Spillway's worker threads: they keep no state outside their arguments.
module spillway
  use, intrinsic :: iso_c_binding
  implicit none
  integer(c_int), parameter :: SPILLWAY_STATUS_OK = 0, SPILLWAY_OUTPUT_FILE = 1, &
                                SPILLWAY_COMBINE_SUM = 1
  interface
    integer(c_int) function spillway_config_new(config) bind(C)
      import :: c_int, c_ptr
      type(c_ptr) :: config
    end function
    integer(c_int) function spillway_config_set_threads(config, threads) bind(C)
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: config
      integer(c_size_t), value :: threads
    end function
    integer(c_int) function spillway_job_new_u64(map, combine, reduce, user, job) bind(C)
      import :: c_int, c_ptr, c_funptr
      type(c_funptr), value :: map, reduce
      integer(c_int), value :: combine
      type(c_ptr), value :: user
      type(c_ptr) :: job
    end function
    integer(c_int) function spillway_run(config, job, inputs, n, kind, output, metrics) bind(C)
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: config, job, inputs, output, metrics
      integer(c_size_t), value :: n
      integer(c_int), value :: kind
    end function
    integer(c_int) function spillway_emit_u64(emitter, key, key_len, value) bind(C)
      import :: c_int, c_ptr, c_size_t, c_int64_t
      type(c_ptr), value :: emitter, key
      integer(c_size_t), value :: key_len
      integer(c_int64_t), value :: value
    end function
    integer(c_int) function spillway_values_next_u64(values, value) bind(C)
      import :: c_int, c_ptr, c_int64_t
      type(c_ptr), value :: values
      integer(c_int64_t) :: value
    end function
    integer(c_int) function spillway_write(out, data, len) bind(C)
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: out, data
      integer(c_size_t), value :: len
    end function
    type(c_ptr) function spillway_last_error() bind(C)
      import :: c_ptr
    end function
    subroutine spillway_job_free(job) bind(C)
      import :: c_ptr
      type(c_ptr), value :: job
    end subroutine
    subroutine spillway_config_free(config) bind(C)
      import :: c_ptr
      type(c_ptr), value :: config
    end subroutine
  end interface
end module spillway

module callbacks
  use spillway
  implicit none
contains
  logical function is_letter(c)
    character(kind=c_char), intent(in) :: c
    is_letter = (c >= 'A' .and. c <= 'Z') .or. (c >= 'a' .and. c <= 'z')
  end function

  integer(c_int) function map(user, text, len, emitter) bind(C)
    type(c_ptr), value :: user, text, emitter
    integer(c_size_t), value :: len
    character(kind=c_char), pointer :: s(:)
    integer(c_size_t) :: i, start
    map = 0
    call c_f_pointer(text, s, [len])
    i = 1
    do while (i <= len)
      do while (i <= len)
        if (is_letter(s(i))) exit
        i = i + 1
      end do
      start = i
      do while (i <= len)
        if (.not. is_letter(s(i))) exit
        i = i + 1
      end do
      if (i > start) then
        if (spillway_emit_u64(emitter, c_loc(s(start)), i - start, 1_c_int64_t) &
            /= SPILLWAY_STATUS_OK) then
          map = 1
          return
        end if
      end if
    end do
  end function

  integer(c_int) function reduce(user, key, key_len, values, out) bind(C)
    type(c_ptr), value :: user, key, values, out
    integer(c_size_t), value :: key_len
    integer(c_int64_t) :: total, n
    character(kind=c_char, len=24), target :: line
    integer :: at
    reduce = 0
    total = 0
    do while (spillway_values_next_u64(values, n) == SPILLWAY_STATUS_OK)
      total = total + n
    end do
    ! "\t<total>\n", digits written from the end of LINE
    at = len(line)
    line(at:at) = achar(10)
    do
      at = at - 1
      line(at:at) = achar(iachar('0') + int(mod(total, 10_c_int64_t)))
      total = total / 10
      if (total == 0) exit
    end do
    at = at - 1
    line(at:at) = achar(9)
    if (spillway_write(out, key, key_len) /= SPILLWAY_STATUS_OK) reduce = 1
    if (spillway_write(out, c_loc(line(at:at)), int(len(line) - at + 1, c_size_t)) &
        /= SPILLWAY_STATUS_OK) reduce = 1
  end function
end module callbacks

program wordcount_f
  use spillway
  use callbacks
  implicit none
  integer, parameter :: MAX_PATH = 4096
  character(kind=c_char, len=MAX_PATH), allocatable, target :: args(:)
  type(c_ptr), allocatable, target :: inputs(:)
  type(c_ptr) :: config, job
  character(kind=c_char), pointer :: message(:)
  integer :: i, nargs, length
  integer(c_int) :: status

  nargs = command_argument_count()
  if (nargs < 2) then
    print '(A)', 'usage: wordcount_f OUTPUT_FILE INPUT...'
    stop 2
  end if
  allocate(args(nargs), inputs(nargs - 1))
  do i = 1, nargs
    call get_command_argument(i, args(i), length)
    args(i)(length + 1:length + 1) = c_null_char
  end do
  do i = 2, nargs
    inputs(i - 1) = c_loc(args(i))
  end do

  config = c_null_ptr
  job = c_null_ptr
  status = spillway_config_new(config)
  if (status == SPILLWAY_STATUS_OK) status = spillway_config_set_threads(config, 2_c_size_t)
  if (status == SPILLWAY_STATUS_OK) &
    status = spillway_job_new_u64(c_funloc(map), SPILLWAY_COMBINE_SUM, c_funloc(reduce), c_null_ptr, job)
  if (status == SPILLWAY_STATUS_OK) &
    status = spillway_run(config, job, c_loc(inputs), int(nargs - 1, c_size_t), &
                          SPILLWAY_OUTPUT_FILE, c_loc(args(1)), c_null_ptr)
  if (status /= SPILLWAY_STATUS_OK) then
    call c_f_pointer(spillway_last_error(), message, [MAX_PATH])
    length = 0
    do while (message(length + 1) /= c_null_char)
      length = length + 1
    end do
    print '(A,I0,A,*(A))', 'wordcount_f: error ', status, ': ', message(1:length)
  end if
  call spillway_job_free(job)
  call spillway_config_free(config)
  if (status /= SPILLWAY_STATUS_OK) stop 1
end program wordcount_f
