declare module "*.bpf.o" {
  const path: string;
  export default path;
}
