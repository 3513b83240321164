export { crierResume };
export default crierResume;
